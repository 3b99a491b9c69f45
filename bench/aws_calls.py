"""AWS API calls of one cache-hit launch through the session gateway (target: 8 or fewer).

    .venv/bin/python bench/aws_calls.py

Runs the AWS configuration against moto_server on 127.0.0.1 with the test suite's
stand-ins for what moto cannot do (run the CodeBuild build, run the Fargate task as a
local process), builds the environment once, then counts every API call the gateway's
own clients make during a second launch of the same repository, by service and operation.
Polls are counted as they happen, at the production poll intervals: ``DescribeTasks``
while the task starts and ``Query`` while the gateway follows the launch's event stream
in DynamoDB. Prints the total and its ratio to the target.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moto.server import ThreadedMotoServer  # noqa: E402

from binderless.aws.dynamodb import DynamoState  # noqa: E402
from binderless.aws.wiring import Overrides, aws_service  # noqa: E402
from binderless.providers.git import GitProvider  # noqa: E402
from binderless.urlguard import UrlGuard  # noqa: E402
from tests.conftest import FIXTURE_REPOS, file_spec, free_port, make_git_repo  # noqa: E402
from tests.e2e import test_aws_mode as e2e  # noqa: E402
from tests.e2e.aws_standins import (  # noqa: E402
    LocalCodeBuildProject,
    LocalFargateTasks,
    LocalImages,
)
from tests.e2e.streams import read_stream  # noqa: E402
from tests.functional.inprocess import serve_in_thread  # noqa: E402

TARGET = 8


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="binderless-aws-calls-"))
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    calls: collections.Counter[str] = collections.Counter()
    counting = False
    try:
        moto = e2e.Moto(f"http://127.0.0.1:{port}")
        deployment = e2e.create_deployment(moto)
        images = LocalImages(tmp / "images")

        def gateway_client(service: str) -> Any:
            client = moto.client(service)

            def count(model: Any, **_: Any) -> None:
                if counting:
                    calls[f"{service}:{model.name}"] += 1

            client.meta.events.register("before-call", count)
            return client

        made: list[Any] = []

        def project(client: Any, name: str) -> LocalCodeBuildProject:
            made.append(LocalCodeBuildProject(client, name, client_factory=moto.client,
                                              images=images, log_group=e2e.BUILD_LOGS))
            return made[-1]

        def tasks(client: Any, **kwargs: Any) -> LocalFargateTasks:
            made.append(LocalFargateTasks(client, client_factory=moto.client, images=images,
                                          workdir=tmp / "tasks", **kwargs))
            return made[-1]

        # The production poll intervals (no poll_interval override): the counts of the
        # polling calls depend on them.
        overrides = Overrides(project=project, tasks=tasks, providers={
            "git": GitProvider(allow_local=True, guard=UrlGuard(enforce=False))})
        service = aws_service(e2e.gateway_settings(deployment, tmp / "gateway"), gateway_client,
                              overrides)
        repo = make_git_repo(FIXTURE_REPOS / "python-requirements", tmp / "repo")
        with serve_in_thread(service) as base:
            warm = read_stream(f"{base}/build/{file_spec(repo)}?build_only=true", timeout=300)
            assert warm.final["phase"] == "ready", warm.text()
            counting = True
            hit = read_stream(f"{base}/build/{file_spec(repo)}", timeout=300)
            counting = False
            assert hit.final["phase"] == "ready", hit.text()
            state = DynamoState(moto.client("dynamodb"), e2e.TABLE)
            asyncio.run(e2e.stop_sessions(service, state))
        for stand_in in made:
            stand_in.close()
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(calls.values())
    for name, count in sorted(calls.items()):
        print(f"  {count:3d}  {name}")
    print(f"AWS API calls of one cache-hit launch: {total} (target <= {TARGET})")
    print(f"ratio (target <= 1.0): {total / TARGET:.2f}")


if __name__ == "__main__":
    main()
