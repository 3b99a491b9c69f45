"""The gateway's per-client-address launch budget (``binderless.launchbudget``): the
token bucket, the client address behind CloudFront and the load balancer, and the two
routes that start a launch on an in-process server configured as the stack configures
the gateway (two trusted proxies)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from binderless.launchbudget import LaunchBudget, client_address
from binderless.local import local_service
from binderless.providers.base import ResolvedRepo
from binderless.settings import Settings
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.functional.inprocess import serve_in_thread


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_launch_per_share_of_the_window() -> None:
    clock = Clock()
    budget = LaunchBudget(3, 300.0, clock=clock)
    assert [budget.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.take("a") == pytest.approx(100.0)  # one more in 300/3 seconds
    assert budget.take("b") == 0.0  # another address has its own budget
    clock.now += 99.0
    assert budget.take("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert budget.take("a") == 0.0
    assert budget.take("a") > 0.0


def test_no_budget_allows_everything_and_memory_stays_bounded() -> None:
    assert all(LaunchBudget(0).take("a") == 0.0 for _ in range(1000))
    clock = Clock()
    budget = LaunchBudget(1, 300.0, max_addresses=100, clock=clock)
    for n in range(1000):
        budget.take(f"10.0.{n // 256}.{n % 256}")
    assert len(budget._buckets) <= 100
    # The most recent addresses are the ones kept: they are still refused.
    assert budget.take("10.0.3.231") > 0.0


@pytest.mark.parametrize(("remote", "forwarded", "hops", "client"), [
    ("203.0.113.9", "", 0, "203.0.113.9"),
    ("203.0.113.9", "6.6.6.6", 0, "203.0.113.9"),          # no proxy trusted: no header
    # CloudFront appends the viewer, the load balancer appends CloudFront's address.
    ("10.0.0.5", "203.0.113.7, 10.0.9.9", 2, "203.0.113.7"),
    ("10.0.0.5", "6.6.6.6, 1.2.3.4, 203.0.113.7, 10.0.9.9", 2, "203.0.113.7"),  # claims
    ("10.0.0.5", "10.0.9.9", 2, "10.0.9.9"),               # a proxy skipped: the leftmost
    ("10.0.0.5", "", 2, "10.0.0.5"),
])
def test_the_client_is_what_the_outermost_trusted_proxy_saw(
        remote: str, forwarded: str, hops: int, client: str) -> None:
    assert client_address(remote, forwarded, hops) == client


class StuckFetcher:
    """Launches wait in ``fetching``: nothing is built or run."""

    async def fetch(self, repo: ResolvedRepo, dest: Path, log: object) -> None:
        await asyncio.Event().wait()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, str]]:
    settings = Settings(state_dir=tmp_path / "state", final_linger_seconds=0.0,
                        keepalive_seconds=0.2, launch_budget_per_ip=2, trusted_proxy_hops=2,
                        max_sessions=50, max_sessions_per_repo=50)
    service = local_service(settings)
    service.fetcher = StuckFetcher()
    repo = make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo")
    with serve_in_thread(service) as base:
        yield base, file_spec(repo)


def viewer(address: str, claimed: str = "") -> dict[str, str]:
    """Headers as the gateway gets them behind CloudFront and the load balancer."""
    chain = ", ".join(a for a in (claimed, address, "10.0.9.9") if a)
    return {"X-Forwarded-For": chain}


def test_each_address_gets_its_budget_of_launches(gateway: tuple[str, str]) -> None:
    base, spec = gateway
    body = {"provider": "git", "spec": spec.removeprefix("git/")}
    with httpx.Client(base_url=base, timeout=30) as http:
        statuses = [http.post("/api/launches", json=body, headers=viewer("203.0.113.7",
                                                                           claimed))
                    .status_code for claimed in ("", "1.2.3.4", "5.6.7.8")]
        # Claims a client writes into X-Forwarded-For itself change nothing.
        assert statuses == [202, 202, 429]
        refused = http.post("/api/launches", json=body, headers=viewer("203.0.113.7"))
        assert refused.status_code == 429
        assert "Too many launches from your address" in refused.json()["message"]
        # Another viewer: a budget of its own.
        assert http.post("/api/launches", json=body,
                         headers=viewer("198.51.100.4")).status_code == 202
        # The event stream of a new launch counts too, and fails as BinderHub's do.
        stream = http.get(f"/build/{spec}", headers={
            **viewer("203.0.113.7"), "Accept": "text/event-stream"})
    assert stream.status_code == 200
    [event] = [json.loads(line[len("data: "):]) for line in stream.text.splitlines()
               if line.startswith("data: ")]
    assert (event["phase"], event["status_code"]) == ("failed", 429)
    assert "Too many launches" in event["message"]


# ----- a signed-in person's session on the sessions' own origin ---------------------------


@pytest.mark.parametrize(("check_owner", "status"), [(True, 403), (False, 200)])
def test_on_a_session_origin_the_token_alone_opens_an_owned_session(
        check_owner: bool, status: int) -> None:
    """The sessions' origin never receives the sign-in cookie, so there the proxy cannot
    tell the owner (``check_owner`` off, as the app sets it with ``session_url``); where
    the cookie does arrive, someone else holding the token is still refused."""
    from aiohttp import web

    from binderless.backends.protocols import Route
    from binderless.server.proxy import SessionProxy
    from tests.conftest import free_port

    async def jupyter(request: web.Request) -> web.Response:
        return web.json_response({"version": "2"})

    async def scenario() -> int:
        upstream = web.Application()
        upstream.router.add_get("/user/s1/api/status", jupyter)
        up_runner = web.AppRunner(upstream)
        await up_runner.setup()
        up_port = free_port()
        await web.TCPSite(up_runner, "127.0.0.1", up_port).start()
        proxy = SessionProxy(lambda _s: Route("s1", f"http://127.0.0.1:{up_port}", "tok",
                                              owner="alice"),
                             lambda _s: None, identify=lambda _request: "",
                             lookup_in_thread=False, check_owner=check_owner)

        async def handle(request: web.Request) -> web.StreamResponse:
            return await proxy.handle(request, "s1")

        app = web.Application()
        app.router.add_route("*", "/user/s1/{rest:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with httpx.AsyncClient() as http:
                answer = await http.get(f"http://127.0.0.1:{port}/user/s1/api/status",
                                        headers={"Authorization": "token tok"})
                return answer.status_code
        finally:
            await proxy.close()
            await runner.cleanup()
            await up_runner.cleanup()

    assert asyncio.run(scenario()) == status
