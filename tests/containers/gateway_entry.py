"""``binderless gateway`` as the gateway image runs it, with the container stand-ins.

Run inside the gateway image (``python3 -m tests.containers.gateway_entry --host H --port
P``): the same settings (``BINDERLESS_*`` variables, AWS mode, no local paths), the same
``aws_service`` wiring and the same server (``binderless.cli._run_server``) as
``binderless gateway``; only the CodeBuild and ECS adapters are the stand-ins of
``container_standins.py``, which start the real runner and session containers through the
engine's socket, and the git provider accepts the test's local repository (the AWS mode's
URL guard refuses local paths; it is tested on its own elsewhere).

Test-only settings (``STANDIN_*``): the runner image, the local registry's URL, the label
of the stand-ins' containers and the runner's inner dockerd arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import boto3
from botocore.config import Config

from binderless.aws.s3 import client_config
from binderless.aws.wiring import Overrides, aws_service
from binderless.cli import _run_server
from binderless.providers.git import GitProvider
from binderless.settings import load_settings
from binderless.urlguard import UrlGuard
from tests.containers.container_standins import ContainerCodeBuildProject, ContainerFargateTasks


def client(service: str) -> Any:
    """A boto3 client of ``AWS_ENDPOINT_URL`` (moto_server); S3 path-style on an IP."""
    if service == "s3":
        return boto3.client("s3", config=client_config().merge(
            Config(s3={"addressing_style": "path"})))
    return boto3.client(service)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    env = os.environ
    settings = load_settings(env, mode="aws", host=args.host, port=args.port,
                             allow_local_paths=False)
    label = env["STANDIN_LABEL"]

    def project(codebuild: Any, name: str) -> ContainerCodeBuildProject:
        return ContainerCodeBuildProject(
            codebuild, name, client_factory=client, runner_image=env["STANDIN_RUNNER_IMAGE"],
            registry_url=env["STANDIN_REGISTRY_URL"], label=label,
            dockerd_args=env.get("STANDIN_DOCKERD_ARGS", ""))

    def tasks(ecs: Any, **kwargs: Any) -> ContainerFargateTasks:
        return ContainerFargateTasks(ecs, client_factory=client, label=label, **kwargs)

    overrides = Overrides(
        project=project, tasks=tasks, poll_interval=0.5,
        providers={"git": GitProvider(allow_local=True, guard=UrlGuard(enforce=False))})
    service = aws_service(settings, client, overrides)
    return asyncio.run(_run_server(service, demo=False))


if __name__ == "__main__":
    sys.exit(main())
