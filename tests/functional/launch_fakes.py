"""Stand-ins for the fetcher, builder and spawner (the ``backends.protocols`` interfaces),
for tests of the launch flow's own logic: quotas, queues, cleanup. Each can be held at a
gate, so that a test decides when a build or a start may finish, and each counts how many
run at once. The sessions' "Jupyter" is one small aiohttp app that answers every status
probe."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from binderless.backends.protocols import ImageRef, LogSink, SessionHandle, SessionSpec
from binderless.envplan import EnvironmentPlan
from binderless.events import Event
from binderless.local import local_service
from binderless.phases import Phase
from binderless.providers.base import ResolvedRepo
from binderless.service import LaunchRequest, LaunchService
from binderless.settings import Settings
from tests.conftest import free_port


class Gate:
    """Counts the callers inside it; they pass when the test opens it (for everyone, or
    for the next ``n``)."""

    def __init__(self, open_: bool = True) -> None:
        self.inside = 0
        self.most = 0
        self.entered = 0
        self._passes = asyncio.Semaphore(0)
        self._open = open_

    async def pass_through(self) -> None:
        self.inside += 1
        self.entered += 1
        self.most = max(self.most, self.inside)
        try:
            if not self._open:
                await self._passes.acquire()
        finally:
            self.inside -= 1

    def let(self, n: int = 1) -> None:
        for _ in range(n):
            self._passes.release()

    def open(self) -> None:
        self._open = True
        self.let(self.inside)


class FakeFetcher:
    async def fetch(self, repo: ResolvedRepo, dest: Path, log: LogSink) -> None:
        dest.mkdir(parents=True)
        (dest / "repo.txt").write_text(repo.repo_url)
        log("fetched\n")


class FakeBuilder:
    """One environment per repository; ``build`` waits at ``gate``."""

    name = "fake"

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.built: set[str] = set()

    def plan(self, checkout: Path) -> EnvironmentPlan:
        url = (checkout / "repo.txt").read_text()
        return EnvironmentPlan(key="env-" + hashlib.sha256(url.encode()).hexdigest()[:12],
                               binder_dir="")

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        return ImageRef(plan.key, plan.key, "") if plan.key in self.built else None

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        log("building\n")
        await self.gate.pass_through()
        self.built.add(plan.key)
        return ImageRef(plan.key, plan.key, "")


class FakeSpawner:
    """``start`` waits at ``gate``; the server is ``jupyter`` (see ``fake_jupyter``)."""

    def __init__(self, gate: Gate, jupyter: Callable[[], str]) -> None:
        self.gate = gate
        self.jupyter = jupyter
        self.started: list[str] = []
        self.stopped: list[str] = []

    async def prepare(self, image: ImageRef) -> None:
        return None

    async def start(self, spec: SessionSpec, log: LogSink) -> SessionHandle:
        await self.gate.pass_through()
        self.started.append(spec.session_id)
        return SessionHandle(spec.session_id, self.jupyter(), f"fake-{spec.session_id}")

    async def stop(self, handle: SessionHandle) -> None:
        self.stopped.append(handle.session_id)

    async def alive(self, handle: SessionHandle) -> bool:
        return handle.session_id not in self.stopped

    async def running(self) -> dict[str, str]:
        return {}

    async def tail(self, handle: SessionHandle, lines: int = 20) -> list[str]:
        return []


@asynccontextmanager
async def fake_jupyter() -> AsyncIterator[str]:
    """Every session's server: 200 to any status probe."""
    async def status(_request: web.Request) -> web.Response:
        return web.json_response({"last_activity": "2030-01-01T00:00:00Z"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", status)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Rig:
    """A local ``LaunchService`` (SQLite, real providers) with the fakes plugged in."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.builds = Gate()
        self.starts = Gate()
        self.url = ""
        self.service: LaunchService = local_service(
            Settings(state_dir=tmp_path / "state", **settings), httpx.Client())
        self.builder = FakeBuilder(self.builds)
        self.spawner = FakeSpawner(self.starts, lambda: self.url)
        self.service.fetcher = FakeFetcher()
        self.service.builder = self.builder
        self.service.spawner = self.spawner

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LaunchService]:
        async with fake_jupyter() as url:
            self.url = url
            await self.service.open()
            try:
                yield self.service
            finally:
                await self.service.close()

    def launch(self, spec: str, owner: str = "") -> str:
        """Start a launch of ``spec`` (``<provider>/<spec>``) in the background."""
        provider, _, rest = spec.partition("/")
        return self.service.start(LaunchRequest(provider, rest, "http://binder.test/",
                                                owner=owner))

    async def final(self, launch_id: str, timeout: float = 30) -> Event:
        async def wait() -> Event:
            async for item in self.service.events.follow(launch_id, 0, tick=0.05):
                if item is not None and item[1].is_final:
                    return item[1]
            raise AssertionError("the stream ended without a final event")

        return await asyncio.wait_for(wait(), timeout)

    def events(self, launch_id: str) -> list[Event]:
        return [event for _seq, event in self.service.events.read(launch_id)]

    def queue_notes(self, launch_id: str) -> list[str]:
        return [e.message for e in self.events(launch_id)
                if e.phase is Phase.WAITING and "queue" in e.fields]


async def until(check: Callable[[], bool], timeout: float = 20) -> None:
    """Wait until ``check()`` holds (the launches run in the background)."""
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)
