"""A generated sweep of hostile requests against an in-process server: no 5xx, no traceback.

Over 10,000 requests, seeded and so the same on every run, each made of one hostile part
(a path, a query, a header, a body, a method, or a malformed request on the wire) on an
otherwise ordinary request to one of the server's routes. The server is the real aiohttp
application with the local backends, served as ``binderless serve`` serves it (through
``start_listener``: the connection guard, the session proxy's fast path, then aiohttp),
on the test's own event loop, except where a
launch would leave the machine: providers answer from a closed ``httpx.MockTransport``
(every repository is "not found"), git runs nothing, and fetching is refused, so no
request launches anything. A fake running session (a tiny upstream on another port)
gives the proxy something to forward to.

Two servers are swept: one others can reach (a public URL, sign-in off, local paths
refused) and a single-user one on loopback (local sign-in, so ``/auth/`` and the
projects API are exercised; git still refuses local paths so that no fuzzed spec
launches a folder of this machine).

What fails: an answer of 500 or more (a ``failed`` event with such a ``status_code``
counts too), or a log record at ERROR or with a traceback. The failures are listed by
request so the report names each one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import test_utils, web

from binderless.server import create_app
from binderless.server.connections import Listener, start_listener
from binderless.settings import Settings
from tests.functional.hostile_requests import (
    SEED,
    Outcome,
    Probe,
    Sweep,
    add_fake_session,
    log_problems,
    send,
    swept_service,
    upstream_app,
)

#: Requests per server; two servers make the sweep's total.
PER_SERVER = 5_200
CONCURRENCY = 24


# ----- the servers ---------------------------------------------------------------------------

@asynccontextmanager
async def running(settings: Settings, *, listener: bool = True) -> AsyncIterator[tuple[int, str]]:
    """The swept server (and its fake session's upstream); yields its port and a launch id.

    ``listener``: served as ``binderless serve`` serves it, through the real connection
    layer (``start_listener``: the connection guard, then the session proxy's fast path,
    then aiohttp); false: through aiohttp's test server, which has neither."""
    upstream_server = test_utils.TestServer(web.Application(client_max_size=1024**2))
    upstream_server.app.router.add_route("*", "/{tail:.*}", upstream_app)
    await upstream_server.start_server()
    service = swept_service(settings)
    app = create_app(service)
    served: Listener | test_utils.TestServer
    if listener:
        served = await start_listener(app, settings, port=0)
    else:
        served = test_utils.TestServer(app)
        await served.start_server()
    port = served.port
    assert port is not None
    try:
        add_fake_session(service, f"http://127.0.0.1:{upstream_server.port}")
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{port}/api/launches",
                json={"provider": "gh", "spec": "org/repo/HEAD"}) as created:
            launch_id = (await created.json())["launch_id"]
        yield port, launch_id
    finally:
        await served.close()
        await upstream_server.close()


# ----- sending -------------------------------------------------------------------------------

async def sweep(settings: Settings, count: int, seed: int, *,
                listener: bool = True) -> tuple[Outcome, int]:
    outcome = Outcome()
    async with running(settings, listener=listener) as (port, launch_id):
        probes = Sweep(random.Random(seed), port, launch_id).probes(count)
        gate = asyncio.Semaphore(CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=20)
        # A connection per request: each starts on the fast path, as a browser's first
        # request does (a connection handed to aiohttp once stays with it).
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                         cookie_jar=aiohttp.DummyCookieJar(),
                                         connector=aiohttp.TCPConnector(force_close=True),
                                         max_line_size=65536, max_field_size=65536) as http:

            async def one(probe: Probe) -> None:
                async with gate:
                    await send(http, port, probe, outcome)

            await asyncio.gather(*(one(p) for p in probes))
    return outcome, len(probes)


# ----- the tests ---------------------------------------------------------------------------

@pytest.fixture
def exposed(tmp_path: Path) -> Settings:
    """A server others reach through a reverse proxy: sign-in off, local paths refused."""
    return Settings(state_dir=tmp_path / "exposed", public_url="https://binder.example",
                    keepalive_seconds=0.5, final_linger_seconds=0.0)


@pytest.fixture
def single_user(tmp_path: Path) -> Settings:
    """The default local server on loopback, signed in as its one user."""
    return Settings(state_dir=tmp_path / "local", sign_in="local", keepalive_seconds=0.5,
                    final_linger_seconds=0.0)


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # WARNING and up: what a server's log shows by default (and the access log's INFO
    # lines, one per request, would only slow the sweep down).
    caplog.set_level(logging.WARNING)
    yield caplog


@pytest.mark.parametrize("which", ["exposed", "single_user"])
def test_hostile_sweep_gives_no_5xx_and_no_traceback(
        which: str, request: pytest.FixtureRequest, captured: pytest.LogCaptureFixture) -> None:
    settings: Settings = request.getfixturevalue(which)
    outcome, sent = asyncio.run(sweep(settings, PER_SERVER, SEED + len(which)))
    assert sent == PER_SERVER
    problems = log_problems(captured.records)
    report = "\n".join([*outcome.failures[:80], "--- log ---", *problems[:40]])
    assert not outcome.failures and not problems, (
        f"{len(outcome.failures)} answers of 5xx and {sum(int(p.split()[0]) for p in problems)}"
        f" log errors in {sent} requests:\n{report}")
    # The sweep reached the server: nearly every request was answered, with every kind of
    # answer. The ones left waiting are those whose Content-Length promises more body.
    waiting = [u for u in outcome.unanswered if "Content-Length: 100" not in u
               and "Content-Length: 50" not in u]
    assert not waiting, waiting[:30]
    assert sum(outcome.statuses.values()) > PER_SERVER * 0.95, outcome.statuses
    assert {200, 400, 403, 404} <= set(outcome.statuses), outcome.statuses


def test_the_sweep_is_the_same_on_every_run() -> None:
    first = Sweep(random.Random(SEED), 8585, "launch").probes(300)
    second = Sweep(random.Random(SEED), 8585, "launch").probes(300)
    assert first == second
    kinds = {p.kind for p in Sweep(random.Random(SEED), 8585, "launch").probes(PER_SERVER)}
    assert kinds == {"path", "query", "host", "origin", "auth", "cookie", "event-id", "body",
                     "method", "wire"}
