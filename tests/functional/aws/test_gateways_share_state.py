"""Two launch services (two gateway copies) sharing one DynamoDB state run one build."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import boto3
import httpx

from binderless.aws.dynamodb import DynamoState, table_definition
from binderless.backends.localfetch import LocalFetcher
from binderless.backends.localspawn import LocalSpawner
from binderless.backends.protocols import ImageRef, LogSink
from binderless.backends.uvbuilder import UvBuilder
from binderless.envplan import EnvironmentPlan
from binderless.providers import ProviderRegistry
from binderless.service import LaunchRequest, LaunchService
from binderless.settings import Settings
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo

TABLE = "binderless-shared"


class CountingUvBuilder(UvBuilder):
    """The real uv builder, counting the builds it runs."""

    builds: list[str] = []  # noqa: RUF012 - shared on purpose: one list for both gateways

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        self.builds.append(plan.key)
        return await super().build(plan, checkout, log)


def gateway(settings: Settings, client: Any) -> LaunchService:
    state = DynamoState(client, TABLE, poll_interval=0.05)
    providers = ProviderRegistry(settings, httpx.Client())
    return LaunchService(settings, providers=providers, store=state, routes=state, events=state,
                         fetcher=LocalFetcher(settings.state_dir / "repos"),
                         builder=CountingUvBuilder(settings), spawner=LocalSpawner(settings))


async def launch_both(a: LaunchService, b: LaunchService, spec: str) -> list[list[Any]]:
    provider, _, rest = spec.partition("/")
    request = LaunchRequest(provider=provider, spec=rest, launch_host="http://127.0.0.1/",
                            build_only=True)
    ids = [a.start(request)]
    await asyncio.sleep(0.2)
    ids.append(b.start(request))

    async def final(service: LaunchService, launch_id: str) -> list[Any]:
        events = []
        async for item in service.events.follow(launch_id, 0, tick=0.5):
            if item is not None:
                events.append(item[1])
        return events

    return list(await asyncio.gather(final(a, ids[0]), final(b, ids[1])))


def test_two_gateways_start_exactly_one_build(moto: Any, region: str, atomic_moto: None,
                                              tmp_path: Path) -> None:
    client = boto3.client("dynamodb", region_name=region)
    client.create_table(**table_definition(TABLE))
    repo = make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo")
    settings = Settings(state_dir=tmp_path / "state")
    a, b = gateway(settings, client), gateway(settings, client)
    assert a.instance_id != b.instance_id
    CountingUvBuilder.builds.clear()
    streams = asyncio.run(launch_both(a, b, file_spec(repo)))
    assert [s[-1].phase for s in streams] == ["ready", "ready"], [s[-1] for s in streams]
    assert streams[0][-1].fields["imageName"] == streams[1][-1].fields["imageName"]
    assert len(CountingUvBuilder.builds) == 1
    follower = "".join(e.message for e in streams[1])
    assert "already being built" in follower
    claim = DynamoState(client, TABLE).get_build(CountingUvBuilder.builds[0])
    assert claim is not None and claim.status == "built" and claim.owner == a.instance_id
