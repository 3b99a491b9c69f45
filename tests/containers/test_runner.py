"""The CodeBuild runner for real: build-runner/Dockerfile built and run as CodeBuild runs it.

CodeBuild and ECR are stood in for by the engine itself and the local registry: the runner
image runs privileged, starts its own engine from the buildspec, runs repo2docker on the
checkout and pushes to the registry. A hostile repository then tries to run code in the
runner, to reach its files and to read its AWS variables.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.containers.conftest import (
    SRC_DIR,
    Engine,
    copy_repo,
    json_lines,
    run_buildspec,
    unique_tag,
)

pytestmark = pytest.mark.containers

#: Fake credentials the runner holds, as CodeBuild gives it the build role's.
AWS_VARIABLES = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKERUNNERKEY0001",
    "AWS_SECRET_ACCESS_KEY": "fake-runner-secret-7d1b",
    "AWS_SESSION_TOKEN": "fake-runner-session-8e2c",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/fake-runner-9f3d",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _log(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def test_runner_builds_pushes_and_reports_the_registry_digest(
        engine: Engine, runner_image: str, containers: list[str], tmp_path: Path) -> None:
    source = copy_repo("container-dockerfile", tmp_path / "src", engine.base_image)
    key = unique_tag()
    image = f"{engine.registry}/binderless-env-test:{key}"
    done = run_buildspec(engine, runner_image, source,
                         {"IMAGE_URI": image, "BASE_IMAGE": engine.base_image,
                          **AWS_VARIABLES}, containers)
    assert done.returncode == 0, _log(done)

    records = json_lines(done.stdout)
    assert records[0]["message"] == f"Building {image} with repo2docker " + str(
        records[0]["message"]).rsplit(" ", 1)[-1]
    [pushed] = [r for r in records if "digest" in r]
    assert pushed["message"] == f"Pushed {image}@{pushed['digest']}"
    assert pushed["digest"] == engine.manifest_digest(image)

    engine.docker("pull", "--quiet", image)
    labels = engine.docker("image", "inspect", "--format",
                           "{{json .Config.Labels}}", image).stdout
    assert f'"binderless.environment":"{key}"' in labels
    ran = engine.docker("run", "--rm", "--network", "none", image, "cat", "/built-by.txt")
    assert ran.stdout.strip() == "built by repo2docker"


def test_a_hostile_repository_runs_nothing_in_the_runner(
        engine: Engine, runner_image: str, containers: list[str], tmp_path: Path) -> None:
    # A file of the runner's, outside the checkout, that the repository tries to read.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "runner-secret.txt").write_text("RUNNER-FILE-SECRET-4a5b\n")
    markers = tmp_path / "markers"
    markers.mkdir()
    source = copy_repo("malicious-runner", outside / "src", engine.base_image)
    (source / "secret-link").symlink_to(f"{SRC_DIR}/../runner-secret.txt")
    (source / "environ-link").symlink_to("/proc/self/environ")
    (source / "binder" / "up-link").symlink_to("../..")

    # The control: repo2docker run inside this checkout would execute its config file.
    control = subprocess.run([sys.executable, "-m", "repo2docker", "--no-build", "--no-run",
                              "."], cwd=source, env={"MARKER_DIR": str(tmp_path),
                                                     "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, timeout=120, check=False)
    assert "PWNED: repo2docker_config.py in the root" in control.stdout, control.stderr
    assert (tmp_path / "pwned-root-config").exists()

    image = f"{engine.registry}/binderless-env-hostile:{unique_tag()}"
    done = run_buildspec(engine, runner_image, source,
                         {"IMAGE_URI": image, "BASE_IMAGE": engine.base_image,
                          "MARKER_DIR": "/markers", **AWS_VARIABLES}, containers,
                         mounts=[f"{markers}:/markers",
                                 f"{outside / 'runner-secret.txt'}:/codebuild/output/src1/"
                                 "runner-secret.txt:ro"])
    assert done.returncode == 0, _log(done)
    output = done.stdout + done.stderr
    assert "PWNED:" not in output  # neither config file ran in the runner
    assert list(markers.iterdir()) == []
    assert "PWNED-IN-BUILD" in output  # while the build's own steps did run, in docker build

    engine.docker("pull", "--quiet", image)
    leak = engine.docker("run", "--rm", "--network", "none", image, "cat", "/leak.txt").stdout
    env_part, rest = leak.split("== environ-link", 1)
    assert "PATH=" in env_part and "NB_USER=jovyan" in env_part  # the dump happened
    for value in [*AWS_VARIABLES.values(), "RUNNER-FILE-SECRET"]:
        if value not in ("true", "us-east-1"):
            assert value not in leak
    assert "AWS_" not in leak
    context = rest.split("== context", 1)[1].split()
    assert "/src/repo2docker_config.py" in context  # the context is the checkout ...
    assert not any("runner-secret" in path or "run_repo2docker" in path
                   for path in context)  # ... and nothing beside it
