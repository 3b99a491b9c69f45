"""The gateway image for real: ``functions/gateway.Dockerfile`` built and run against moto.

The image is built from the local base image, then run as the gateway's Fargate service
runs it (``binderless gateway``, as uid 10001, configured by ``BINDERLESS_*`` variables),
with ``AWS_ENDPOINT_URL`` pointing at ``moto_server`` on loopback where the deployment's
resources were made. The engine has no bridge network, so the container shares the host's
network and the gateway listens on a free loopback port instead of 0.0.0.0:8080.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from binderless.backends.docker import free_loopback_port
from tests.containers.conftest import ROOT, Engine, unique_tag
from tests.e2e.test_aws_mode import (
    BUCKET,
    CLUSTER,
    PROJECT,
    REGISTRY,
    REPOSITORY,
    SESSION_LOGS,
    TABLE,
    Moto,
    create_deployment,
)
from tests.e2e.test_aws_mode import moto_server as moto_server

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def gateway_image(engine: Engine) -> str:
    tag = "binderless-gateway:test"
    engine.docker("build", "--quiet", "--network", "host",
                  "--build-arg", f"BASE_IMAGE={engine.base_image}",
                  "-f", str(ROOT / "functions" / "gateway.Dockerfile"), "-t", tag, str(ROOT),
                  timeout=900)
    return tag


@pytest.fixture
def gateway(engine: Engine, gateway_image: str, moto_server: Moto,
            containers: list[str]) -> Iterator[str]:
    deployment = create_deployment(moto_server)
    port = free_loopback_port()
    settings = {
        "AWS_TABLE": TABLE, "AWS_BUCKET": BUCKET, "ECR_REGISTRY": REGISTRY,
        "ECR_REPOSITORY": REPOSITORY, "BASE_IMAGE": f"{REGISTRY}/mirror/buildpack-deps:jammy",
        "CODEBUILD_PROJECT": PROJECT, "ECS_CLUSTER": CLUSTER, "SUBNETS": deployment.subnet,
        "SECURITY_GROUPS": deployment.security_group,
        "EXECUTION_ROLE_ARN": deployment.execution_role,
        "TASK_ROLE_ARN": deployment.task_role, "SESSION_LOG_GROUP": SESSION_LOGS,
    }
    env = {**{f"BINDERLESS_{k}": v for k, v in settings.items()},
           "AWS_ENDPOINT_URL": moto_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    name = f"binderless-gateway-{unique_tag()}"
    containers.append(name)
    engine.docker("run", "-d", "--name", name, "--network", "host",
                  *[arg for key in env for arg in ("-e", key)], gateway_image,
                  "binderless", "gateway", "--host", "127.0.0.1", "--port", str(port),
                  env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/versions", timeout=2)
            break
        except httpx.HTTPError:
            running = engine.docker("inspect", "-f", "{{.State.Running}}", name).stdout
            if running.strip() != "true":
                logs = engine.docker("logs", name, check=False)
                raise AssertionError(f"the gateway exited:\n{logs.stdout}{logs.stderr}") \
                    from None
            time.sleep(0.3)
    else:
        raise AssertionError("the gateway did not answer within 60 s")
    yield base


def test_gateway_image_answers_health_and_versions_against_moto(
        engine: Engine, gateway: str, containers: list[str]) -> None:
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
    assert uid == "10001"
