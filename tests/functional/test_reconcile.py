"""The reconciler repairs what a crashed gateway or a lost event left behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from binderless.backends.protocols import LogSink, SessionHandle, SessionRecord, SessionSpec
from binderless.events import Event
from binderless.local import local_service
from binderless.phases import Phase
from binderless.service import LaunchService
from binderless.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class RecordingSpawner:
    """Stands in for ECS, which cannot run here: it remembers what was stopped."""

    def __init__(self) -> None:
        self.alive_tasks: set[str] = set()
        self.stopped: list[str] = []
        #: What ECS would list as running: session id -> task.
        self.listed: dict[str, str] = {}

    async def prepare(self, image: object) -> None:
        return None

    async def running(self) -> dict[str, str]:
        return {s: t for s, t in self.listed.items() if t not in self.stopped}

    async def start(self, spec: SessionSpec, log: LogSink) -> SessionHandle:
        raise AssertionError("the reconciler never starts sessions")

    async def stop(self, handle: SessionHandle) -> None:
        self.alive_tasks.discard(handle.backend_id)
        self.stopped.append(handle.backend_id)

    async def alive(self, handle: SessionHandle) -> bool:
        return handle.backend_id in self.alive_tasks

    async def tail(self, handle: SessionHandle, lines: int = 20) -> list[str]:
        return []


def service(tmp_path: Path, clock: Clock, spawner: RecordingSpawner) -> LaunchService:
    svc = local_service(Settings(state_dir=tmp_path), httpx.Client(), clock=clock)
    svc.spawner = spawner
    return svc


def session(session_id: str, launch_id: str, task: str, now: float) -> SessionRecord:
    return SessionRecord(session_id=session_id, launch_id=launch_id, owner="", repo_url="r",
                         resolved_ref="x", image_key="k", home="/nowhere", target="http://10.0.0.9:8888",
                         token="t", backend_id=task, status="starting", created_at=now,
                         last_activity=now)


def test_abandoned_launch_fails_and_its_task_is_stopped(tmp_path: Path) -> None:
    clock, spawner = Clock(), RecordingSpawner()
    svc = service(tmp_path, clock, spawner)
    svc.store.create_launch("lost", "gh", "org/repo/HEAD", clock.now)
    svc.events.append("lost", Event(Phase.LAUNCHING, "Launching server...\n"))
    svc.store.add_session(session("s-lost", "lost", "task-lost", clock.now))
    spawner.alive_tasks.add("task-lost")
    svc.store.create_launch("busy", "gh", "org/other/HEAD", clock.now)

    clock.now += 600  # ten minutes: nothing is abandoned yet
    svc.events.append("busy", Event(Phase.BUILDING, "Step 3/9\n"))
    assert asyncio.run(svc.reconcile(abandon_after=900))["abandoned"] == []

    clock.now += 400  # "lost" has been silent for 1000 s, "busy" for 400 s
    result = asyncio.run(svc.reconcile(abandon_after=900))
    assert result["abandoned"] == ["lost"]
    final = svc.events.read("lost")[-1][1]
    assert final.phase is Phase.FAILED and "Launch the repository again" in final.message
    assert spawner.stopped == ["task-lost"]
    assert svc.store.get_session("s-lost").status == "stopped"
    assert svc.store.get_launch("busy")["phase"] != "failed"  # type: ignore[index]


def test_a_stopped_task_event_closes_its_session(tmp_path: Path) -> None:
    clock, spawner = Clock(), RecordingSpawner()
    svc = service(tmp_path, clock, spawner)
    svc.store.add_session(session("s1", "l1", "arn:aws:ecs:task/abc", clock.now))
    svc.store.update_session("s1", status="running")
    assert asyncio.run(svc.stop_task_session("arn:aws:ecs:task/abc", "task stopped")) == "s1"
    assert svc.store.get_session("s1").stop_reason == "task stopped"
    assert asyncio.run(svc.stop_task_session("arn:aws:ecs:task/unknown", "task stopped")) is None


def test_proxy_activity_reaches_the_shared_store_at_most_once_a_minute(tmp_path: Path) -> None:
    """Several gateways share the store: a session busy through one must look busy to all."""
    clock, spawner = Clock(), RecordingSpawner()
    svc = service(tmp_path, clock, spawner)
    svc.store.add_session(session("s1", "l1", "task", clock.now))
    clock.now += 100
    svc.record_activity("s1")
    assert svc.store.get_session("s1").last_activity == clock.now
    flushed = clock.now
    clock.now += 30
    svc.record_activity("s1")  # within the minute: memory only
    assert svc.store.get_session("s1").last_activity == flushed
    clock.now += 31
    svc.record_activity("s1")
    assert svc.store.get_session("s1").last_activity == clock.now


def test_a_server_with_no_live_session_record_is_stopped_as_an_orphan(tmp_path: Path) -> None:
    clock, spawner = Clock(), RecordingSpawner()
    svc = service(tmp_path, clock, spawner)
    svc.store.create_launch("l", "gh", "org/repo/HEAD", clock.now)
    svc.store.add_session(session("s-live", "l", "task-live", clock.now))
    svc.store.add_session(session("s-ended", "l", "task-ended", clock.now))
    svc.store.update_session("s-ended", status="stopped", stopped_at=clock.now)
    spawner.alive_tasks.update({"task-live", "task-ended", "task-unknown"})
    spawner.listed = {"s-live": "task-live", "s-ended": "task-ended", "s-unknown": "task-unknown"}

    result = asyncio.run(svc.reconcile(cull=False))
    assert sorted(result["orphans"]) == ["s-ended", "s-unknown"]
    assert sorted(spawner.stopped) == ["task-ended", "task-unknown"]
    assert svc.store.get_session("s-live").status == "starting"
