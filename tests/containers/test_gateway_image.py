"""The gateway image for real: ``functions/gateway.Dockerfile`` built and run against moto.

The image is built from the local base image, then run as the gateway's Fargate service
runs it (``binderless gateway``, as uid 10001, configured by ``BINDERLESS_*`` variables),
with ``AWS_ENDPOINT_URL`` pointing at ``moto_server`` on loopback where the deployment's
resources were made. The engine has no bridge network, so the container shares the host's
network and the gateway listens on a free loopback port instead of 0.0.0.0:8080.

One launch then goes through the gateway container end to end. CodeBuild and ECS stay
moto; what moto cannot do is done by the stand-ins of ``container_standins.py``, which run
INSIDE the gateway container (this folder, the engine's ``docker`` CLI and its socket are
mounted into it, and ``gateway_entry.py`` starts the gateway exactly as ``binderless
gateway`` does, with the two adapters swapped): the build is the real runner image, run
privileged with its own dockerd, repo2docker building the repository's Dockerfile and
pushing to the local registry (ECR's stand-in, so the deployment's registry setting names
it); the task is the pushed image, pulled and run with the task definition's command and
the task's environment, its ``session-start`` fetching the checkout from (moto) S3. The
gateway's own proxy then carries a kernel's WebSocket to it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from binderless.backends.docker import free_loopback_port
from tests.conftest import git
from tests.containers.conftest import INNER_DOCKERD_ARGS, ROOT, Engine, unique_tag
from tests.e2e.streams import read_stream, run_code
from tests.e2e.test_aws_mode import (
    BUCKET,
    CLUSTER,
    PROJECT,
    REGISTRY,
    REPOSITORY,
    SESSION_LOGS,
    TABLE,
    Deployment,
    Moto,
    create_deployment,
)
from tests.e2e.test_aws_mode import moto_server as moto_server

pytestmark = pytest.mark.containers

#: The gateway image's user (functions/gateway.Dockerfile).
GATEWAY_UID = 10001
#: Where the test's repository and this checkout's tests are mounted in the gateway.
REPO_MOUNT = "/srv/repo"
TESTS_MOUNT = "/srv/binderless-tests"
SOCKET_MOUNT = "/run/binderless-engine/docker.sock"
STANDIN_LABEL = "binderless.test-standin"


@pytest.fixture(scope="module")
def deployment(moto_server: Moto) -> Deployment:
    return create_deployment(moto_server)


def gateway_env(moto_server: Moto, deployment: Deployment,
                **settings: str) -> dict[str, str]:
    """The variables the deployment gives the gateway's task, with moto as AWS."""
    values = {
        "AWS_TABLE": TABLE, "AWS_BUCKET": BUCKET, "ECR_REGISTRY": REGISTRY,
        "ECR_REPOSITORY": REPOSITORY, "BASE_IMAGE": f"{REGISTRY}/mirror/buildpack-deps:jammy",
        "CODEBUILD_PROJECT": PROJECT, "ECS_CLUSTER": CLUSTER, "SUBNETS": deployment.subnet,
        "SECURITY_GROUPS": deployment.security_group,
        "EXECUTION_ROLE_ARN": deployment.execution_role,
        "TASK_ROLE_ARN": deployment.task_role, "SESSION_LOG_GROUP": SESSION_LOGS,
        **settings,
    }
    return {**{f"BINDERLESS_{k}": v for k, v in values.items()},
            "AWS_ENDPOINT_URL": moto_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def run_gateway(engine: Engine, image: str, env: Mapping[str, str], containers: list[str],
                *, options: tuple[str, ...] = (),
                command: tuple[str, ...] = ("binderless", "gateway")) -> str:
    """Start the gateway image on a free loopback port; its base URL once it answers."""
    port = free_loopback_port()
    name = f"binderless-gateway-{unique_tag()}"
    containers.append(name)
    engine.docker("run", "-d", "--name", name, "--network", "host", *options,
                  *[arg for key in env for arg in ("-e", key)], image,
                  *command, "--host", "127.0.0.1", "--port", str(port), env=dict(env))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/versions", timeout=2)
            return base
        except httpx.HTTPError:
            running = engine.docker("inspect", "-f", "{{.State.Running}}", name).stdout
            if running.strip() != "true":
                logs = engine.docker("logs", name, check=False)
                raise AssertionError(f"the gateway exited:\n{logs.stdout}{logs.stderr}") \
                    from None
            time.sleep(0.3)
    raise AssertionError("the gateway did not answer within 60 s")


def test_gateway_image_answers_health_and_versions_against_moto(
        engine: Engine, gateway_image: str, moto_server: Moto, deployment: Deployment,
        containers: list[str]) -> None:
    gateway = run_gateway(engine, gateway_image, gateway_env(moto_server, deployment),
                          containers)
    versions = httpx.get(f"{gateway}/versions", timeout=10)
    assert versions.status_code == 200
    assert "binderhub" in versions.json()

    health = httpx.get(f"{gateway}/health", timeout=30)
    body = health.json()
    assert health.status_code == 200, body
    assert body["ok"] is True and body["checks"]

    [name] = containers
    facts = json.loads(engine.docker("inspect", name).stdout)[0]
    assert facts["Config"]["User"] == "gateway"
    uid = engine.docker("exec", name, "id", "-u").stdout.strip()
    assert uid == str(GATEWAY_UID)


@pytest.fixture
def standins_removed(engine: Engine) -> Iterator[str]:
    """A label for the stand-ins' containers; all of them are removed at the end."""
    label = unique_tag()
    yield label
    left = engine.docker("ps", "-aq", "--filter", f"label={STANDIN_LABEL}={label}",
                         check=False).stdout.split()
    if left:
        engine.docker("rm", "-f", "-v", *left, check=False, timeout=120)


def test_a_launch_through_the_gateway_image_builds_in_the_runner_and_runs_the_session_image(
        engine: Engine, gateway_image: str, runner_image: str, session_image: str,
        moto_server: Moto, deployment: Deployment, containers: list[str],
        standins_removed: str, tmp_path: Path) -> None:
    # A Dockerfile repository on top of the session image (JupyterLab, repo2docker's
    # entrypoint, session-start): repo2docker builds it as it is. A new environment
    # every run, so the build always runs.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text(
        f"FROM {session_image}\n"
        f"COPY --chown=1000:1000 . /home/jovyan/\n"
        f"LABEL binderless.test-run={unique_tag()}\n")
    (repo / "hello.txt").write_text("from the launched commit\n")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "fixture", cwd=repo)
    # The gateway (uid 10001) clones it from its mount: git wants the owner to be the user.
    for folder, _dirs, files in os.walk(repo):
        os.chown(folder, GATEWAY_UID, GATEWAY_UID)
        for file in files:
            os.lchown(Path(folder, file), GATEWAY_UID, GATEWAY_UID)

    docker_cli = shutil.which("docker", path=engine.env["PATH"])
    assert docker_cli is not None
    socket = engine.env["DOCKER_HOST"].removeprefix("unix://")
    env = {
        **gateway_env(moto_server, deployment,
                      # The local registry is ECR here: the runner pushes to it and the
                      # task's definition names it.
                      ECR_REGISTRY=engine.registry, BASE_IMAGE=engine.base_image,
                      BUILD_TIMEOUT_SECONDS="600", READY_TIMEOUT_SECONDS="120",
                      FINAL_LINGER_SECONDS="0", KEEPALIVE_SECONDS="1"),
        "PYTHONPATH": TESTS_MOUNT,
        "STANDIN_RUNNER_IMAGE": runner_image, "STANDIN_LABEL": standins_removed,
        "STANDIN_REGISTRY_URL": f"http://{engine.registry}",
        "STANDIN_DOCKERD_ARGS": INNER_DOCKERD_ARGS,
    }
    gateway = run_gateway(
        engine, gateway_image, env, containers,
        options=("-v", f"{ROOT / 'tests'}:{TESTS_MOUNT}/tests:ro",
                 "-v", f"{docker_cli}:/usr/local/bin/docker:ro",
                 "-v", f"{socket}:{SOCKET_MOUNT}",
                 # On the command line: the docker CLI that starts this needs its own.
                 "-e", f"DOCKER_HOST=unix://{SOCKET_MOUNT}",
                 # The engine's socket is root's (mode 660): the gateway's user joins its
                 # group instead of running as root.
                 "--group-add", str(os.stat(socket).st_gid),
                 "-v", f"{repo}:{REPO_MOUNT}:ro"),
        command=("python3", "-m", "tests.containers.gateway_entry"))

    spec = f"git/{quote('file://' + REPO_MOUNT, safe='')}/HEAD"
    stream = read_stream(f"{gateway}/build/{spec}", timeout=900)
    [gateway_name] = containers
    logs = engine.docker("logs", gateway_name, check=False)
    assert stream.final["phase"] == "ready", (stream.text() + logs.stdout[-3000:]
                                              + logs.stderr[-3000:])
    text = stream.text()
    image = f"{engine.registry}/{REPOSITORY}:"
    # The build: the runner's repo2docker, pushing to the registry, followed through
    # (moto) CloudWatch Logs; the digest the runner reports is the registry's.
    assert "on AWS CodeBuild" in text and "Started AWS CodeBuild build" in text
    assert "Running the buildspec in the runner image" in text
    pushed = [line for line in text.splitlines() if line.startswith(f"Pushed {image}")]
    assert len(pushed) == 1, text
    ready = stream.final
    assert ready["image"].startswith(image)
    assert pushed[0] == f"Pushed {ready['image']}@{engine.manifest_digest(ready['image'])}"
    assert "Started Fargate task" in text and "Task running at 127." in text

    # The session: the pushed image in a container of its own, reached through the
    # gateway's proxy; its session-start unpacked the launch's checkout from (moto) S3.
    assert ready["url"].startswith(f"{gateway}/user/")
    code = ("import os, pathlib\n"
            "print(os.getuid(), open('hello.txt').read().strip(),"
            " pathlib.Path('/usr/local/bin/binderless-session-start').is_file())")
    assert run_code(ready["url"], ready["token"], code) == \
        "1000 from the launched commit True\n"
    tasks = engine.docker("ps", "-a", "--filter", f"label={STANDIN_LABEL}={standins_removed}",
                          "--format", "{{.Image}} {{.Names}}").stdout.split("\n")
    assert f"{ready['image']} binderless-task-" in "\n".join(tasks)
    # The runner's container ran privileged and is gone with its inner engine.
    assert not any(line.split(" ")[-1].startswith("binderless-codebuild-")
                   for line in tasks if line)
    refused = httpx.get(f"{ready['url']}api/kernels", timeout=10)
    assert refused.status_code == 403  # the gateway's proxy wants the token
