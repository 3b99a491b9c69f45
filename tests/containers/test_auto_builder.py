"""``--builder auto`` (the default) on the project's real engine.

``binderless serve`` with no builder option, an engine answering at ``DOCKER_HOST``: a
repository with a Dockerfile goes to repo2docker and runs in a container of its image,
while a requirements.txt repository stays with the uv builder and runs as a local
process, both from one server. (The choice itself, with fakes, is tested in
tests/functional/test_auto_builder.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import file_spec, git, start_server, stop_server
from tests.containers.conftest import Engine, unique_tag
from tests.e2e.streams import read_stream, run_code

pytestmark = pytest.mark.containers

WHERE = "import os, sys\nprint(os.getuid(), sys.prefix, open('hello.txt').read().strip())"


def test_auto_builds_a_dockerfile_with_repo2docker_and_requirements_with_uv(
        engine: Engine, session_image: str, fixture_repo: Callable[[str], Path],
        tmp_path: Path) -> None:
    dockerfile_repo = tmp_path / "dockerfile-repo"
    dockerfile_repo.mkdir()
    (dockerfile_repo / "Dockerfile").write_text(
        f"FROM {session_image}\n"
        "COPY --chown=1000:1000 . /home/jovyan/\n"
        f"LABEL binderless.test-run={unique_tag()}\n")  # a new environment every run
    (dockerfile_repo / "hello.txt").write_text("in a container\n")
    git("init", "-q", "-b", "main", cwd=dockerfile_repo)
    git("add", "-A", cwd=dockerfile_repo)
    git("commit", "-q", "-m", "fixture", cwd=dockerfile_repo)
    uv_repo = fixture_repo("python-requirements")
    (uv_repo / "hello.txt").write_text("in a local process\n")
    git("add", "-A", cwd=uv_repo)
    git("commit", "-q", "-m", "hello", cwd=uv_repo)

    server = start_server(tmp_path / "state", env=engine.env)  # --builder auto: the default
    try:
        docker = read_stream(server.url(f"/build/{file_spec(dockerfile_repo)}"), timeout=900)
        assert docker.final["phase"] == "ready", docker.text() + server.output()[-3000:]
        assert any(line.startswith("Building ") and "with repo2docker" in line
                   for line in docker.text().splitlines())
        assert "Started container" in docker.text()
        ready = docker.final
        assert run_code(ready["url"], ready["token"], WHERE) == \
            "1000 /opt/venv in a container\n"  # the image's venv
        [container] = engine.docker("ps", "-q", "--filter",
                                    "label=binderless.session").stdout.split()
        assert engine.docker("inspect", "-f", "{{.Config.Image}}", container).stdout.strip() \
            == ready["image"]

        local = read_stream(server.url(f"/build/{file_spec(uv_repo)}"), timeout=600)
        assert local.final["phase"] == "ready", local.text() + server.output()[-3000:]
        text = local.text()
        assert "with uv" in text and "Started container" not in text
        assert not any(line.startswith("Building ") and "with repo2docker" in line
                       for line in text.splitlines())
        ready = local.final
        _uid, prefix, hello = run_code(ready["url"], ready["token"], WHERE).split(" ", 2)
        assert prefix.startswith(str(tmp_path / "state"))  # a uv environment of this server
        assert hello == "in a local process\n"
        # Still one container: the uv session is not one.
        assert len(engine.docker("ps", "-q", "--filter",
                                 "label=binderless.session").stdout.split()) == 1
    finally:
        stop_server(server)
        left = engine.docker("ps", "-aq", "--filter", "label=binderless.session",
                             check=False).stdout.split()
        for container in left:
            engine.docker("rm", "-f", container, check=False)
