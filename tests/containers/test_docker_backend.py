"""``binderless serve --builder docker --spawner docker`` on a real engine, end to end.

The project's engine has no bridge network (``dockerd --bridge=none``), like the engines the
issue found failing: builds must use the host's network, the session container shares it
with Jupyter on a free loopback port, and Jupyter (uid 1000) must be able to write its home.
A kernel then runs code through the server's proxy, over WebSocket.

The second engine (``bridge_engine``) has Docker's usual bridge network, without iptables:
there the same backend publishes Jupyter's port on 127.0.0.1 (through docker-proxy) and
builds in the bridge, where a build step has no way out (no NAT), so that repository
builds on the session image and needs no network.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, file_spec, git, start_server, stop_server
from tests.containers.conftest import Engine, copy_repo, unique_tag
from tests.e2e.streams import read_stream, run_code

pytestmark = pytest.mark.containers


@contextlib.contextmanager
def serving_with_docker(engine: Engine, state_dir: Path) -> Iterator[LiveServer]:
    server = start_server(state_dir, "--builder", "docker", "--spawner", "docker",
                          env=engine.env)
    try:
        yield server
    finally:
        stop_server(server)
        # Whatever the server left behind (it stops its sessions on a clean exit).
        left = engine.docker("ps", "-aq", "--filter", "label=binderless.session",
                             check=False).stdout.split()
        for container in left:
            engine.docker("rm", "-f", container, check=False)


@pytest.fixture
def docker_server(engine: Engine, tmp_path: Path) -> Iterator[LiveServer]:
    with serving_with_docker(engine, tmp_path / "state") as server:
        yield server


def test_a_dockerfile_repository_launches_on_an_engine_without_a_bridge(
        engine: Engine, docker_server: LiveServer, tmp_path: Path) -> None:
    repo = copy_repo("container-jupyter", tmp_path / "repo", engine.base_image)
    # A new environment key every run, so the build path runs every time (its layers come
    # from the engine's cache after the first run).
    with (repo / "Dockerfile").open("a") as dockerfile:
        dockerfile.write(f"# test run {unique_tag()}\n")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "fixture", cwd=repo)

    stream = read_stream(docker_server.url(f"/build/{file_spec(repo)}"), timeout=900)

    assert stream.final["phase"] == "ready", stream.text() + docker_server.output()[-3000:]
    assert "build steps use the host's network" in stream.text()
    assert "(in the host's network)" in stream.text()
    ready = stream.final
    code = ("import os, pathlib\n"
            "pathlib.Path('written-by-kernel.txt').write_text('ok')\n"
            "print(os.getuid(), os.environ['HOME'], open('hello.txt').read().strip())")
    out = run_code(ready["url"], ready["token"], code)
    assert out == "1000 /home/jovyan made for the container tier\n"

    [container] = engine.docker("ps", "-q", "--filter", "label=binderless.session").stdout.split()
    facts = json.loads(engine.docker("inspect", container).stdout)[0]
    assert facts["HostConfig"]["NetworkMode"] == "host"
    assert "--ip=127.0.0.1" in facts["Args"]  # only loopback, though in the host's network
    assert facts["Config"]["Image"] == ready["image"]
    # The home the container wrote is the session's folder on the host.
    [written] = list((docker_server.state_dir / "sessions").glob("*/home/written-by-kernel.txt"))
    assert written.read_text() == "ok"


def test_a_dockerfile_repository_launches_on_an_engine_with_a_bridge(
        bridge_engine: Engine, session_image: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text(
        f"FROM {session_image}\n"
        "COPY --chown=1000:1000 . /home/jovyan/\n"
        f"LABEL binderless.test-run={unique_tag()}\n")  # a new environment every run
    (repo / "hello.txt").write_text("made for the bridge\n")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "fixture", cwd=repo)

    with serving_with_docker(bridge_engine, tmp_path / "state") as server:
        stream = read_stream(server.url(f"/build/{file_spec(repo)}"), timeout=900)
        assert stream.final["phase"] == "ready", stream.text() + server.output()[-3000:]
        text = stream.text()
        assert "host's network" not in text  # neither the build nor the container
        assert "(published)" in text
        ready = stream.final
        out = run_code(ready["url"], ready["token"],
                       "import os\nprint(os.getuid(), open('hello.txt').read().strip())")
        assert out == "1000 made for the bridge\n"

        [container] = bridge_engine.docker("ps", "-q", "--filter",
                                           "label=binderless.session").stdout.split()
        facts = json.loads(bridge_engine.docker("inspect", container).stdout)[0]
        assert facts["HostConfig"]["NetworkMode"] in ("bridge", "default")
        assert facts["NetworkSettings"]["Networks"]["bridge"]["IPAddress"].startswith(
            "10.213.0.")
        [published] = facts["NetworkSettings"]["Ports"]["8888/tcp"]
        assert published["HostIp"] == "127.0.0.1"  # only loopback reaches it
        assert f"on port {published['HostPort']} (published)" in text
