"""Full capacity: a launch past the server's or the repository's quota ends with a clear
``failed`` event (BinderHub's words for the per-repository limit) and starts nothing, also
when many launches arrive at the same moment (the quota check and the session record are
one step)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from binderless.backends.protocols import Reservation, SessionRecord
from binderless.backends.sqlite import Database, SqliteStore
from binderless.events import Event
from binderless.local import local_service
from binderless.phases import Phase
from binderless.settings import Settings
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.e2e.streams import read_stream
from tests.functional.inprocess import serve_in_thread
from tests.functional.launch_fakes import Rig


def running(session_id: str, repo_url: str) -> SessionRecord:
    return SessionRecord(session_id=session_id, launch_id="earlier", owner="", repo_url=repo_url,
                         resolved_ref="abc", image_key="k", home="/nowhere", target="",
                         token="t", backend_id="", status="running", created_at=1.0,
                         last_activity=1.0)


@pytest.mark.parametrize(("limits", "other_repo", "message", "hint"), [
    ({"max_sessions": 1}, True, "This server is full: 1 sessions are running",
     "Try again in a few minutes"),
    ({"max_sessions_per_repo": 1}, False, "Too many users running file://",
     "At most 1 sessions of this repository"),
])
def test_a_launch_past_a_quota_fails_clearly_and_starts_nothing(
        tmp_path: Path, limits: dict[str, int], other_repo: bool, message: str,
        hint: str) -> None:
    repo = make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo")
    service = local_service(Settings(state_dir=tmp_path / "state", final_linger_seconds=0.0,
                                     keepalive_seconds=0.2, **limits))
    url = "https://example.org/other" if other_repo else f"file://{repo}"
    with serve_in_thread(service) as base:
        # After the start: a local server closes the sessions it cannot reach as it starts.
        service.store.add_session(running("s-earlier", url))
        stream = read_stream(f"{base}/build/{file_spec(repo)}", timeout=60)
        active = [r.session_id for r in service.store.sessions("starting", "running")]
    assert active == ["s-earlier"]  # no session was started
    assert stream.status == 200
    failed = stream.final
    assert failed["phase"] == "failed" and failed["status_code"] == 429, failed
    assert message in failed["message"] and hint in failed["message"], failed["message"]
    assert "fetching" not in stream.phases  # refused before anything was fetched or built


# ----- races: the check and the session record are one step ---------------------------------


def reservation(session_id: str, repo_url: str = "https://example.org/r") -> SessionRecord:
    return dataclasses.replace(running(session_id, repo_url), launch_id=f"l-{session_id}",
                               status="starting")


def test_simultaneous_reservations_from_many_connections_fill_the_quota_exactly(
        tmp_path: Path) -> None:
    # Five connections to one database (as five processes would have), five threads each:
    # a lock inside one connection cannot be what keeps them apart.
    databases = [Database(tmp_path / "state.db") for _ in range(5)]
    stores = [SqliteStore(db) for db in databases]
    barrier = threading.Barrier(25)

    def reserve(i: int) -> Reservation:
        barrier.wait()
        return stores[i % 5].reserve_session(reservation(f"s{i}"), max_total=5,
                                             max_of_repo=25)

    try:
        with ThreadPoolExecutor(25) as pool:
            answers = list(pool.map(reserve, range(25)))
        assert sum(a.reserved for a in answers) == 5
        refused = [a for a in answers if not a.reserved]
        assert len(refused) == 20
        assert {(a.refused, a.active) for a in refused} == {("server", 5)}
        assert stores[0].count_active() == 5
        # Per repository, in the same step.
        answer = stores[1].reserve_session(reservation("x", "https://example.org/r"),
                                           max_total=50, max_of_repo=5)
        assert (answer.refused, answer.active) == ("repo", 5)
        assert stores[0].reserve_session(reservation("y", "https://example.org/other"),
                                         max_total=50, max_of_repo=5).reserved
        # A stopped session frees its slot.
        winner = next(f"s{i}" for i, answer in enumerate(answers) if answer.reserved)
        stores[2].update_session(winner, status="stopped")
        assert stores[3].reserve_session(reservation("z"), max_total=50,
                                         max_of_repo=5).reserved
    finally:
        for db in databases:
            db.close()


@pytest.mark.parametrize(("limits", "message"), [
    ({"max_sessions": 5}, "This server is full: 5 sessions are running"),
    ({"max_sessions_per_repo": 5}, "Too many users running file://"),
])
def test_25_simultaneous_launches_give_5_sessions_and_20_clear_refusals(
        tmp_path: Path, limits: dict[str, int], message: str) -> None:
    repo = make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo")
    rig = Rig(tmp_path, max_concurrent_starts=25, **limits)
    rig.builds.open()

    async def scenario() -> list[Event]:
        async with rig.running():
            launches = [rig.launch(file_spec(repo)) for _ in range(25)]
            finals = await asyncio.gather(*(rig.final(launch) for launch in launches))
            assert rig.service.store.count_active() == 5
            return finals

    finals = asyncio.run(scenario())
    ready = [f for f in finals if f.phase is Phase.READY]
    refused = [f for f in finals if f.phase is Phase.FAILED]
    assert len(ready) == 5 and len(refused) == 20, finals
    assert all(f.fields["status_code"] == 429 and message in f.message for f in refused), refused
    assert len(rig.spawner.started) == 5


def test_the_reconciler_gives_back_slots_that_ended_launches_left_behind(tmp_path: Path) -> None:
    now = [1_000_000.0]
    service = local_service(Settings(state_dir=tmp_path / "state"), clock=lambda: now[0])
    store = service.store
    for launch_id, phase in (("ended", "failed"), ("running", "building")):
        store.create_launch(launch_id, "gh", "a/b/HEAD", now[0])
        store.update_launch(launch_id, phase=phase)
        record = dataclasses.replace(reservation(f"s-{launch_id}"), launch_id=launch_id,
                                     created_at=now[0])
        assert store.reserve_session(record, max_total=2, max_of_repo=2).reserved
    assert asyncio.run(service.reconcile(cull=False, resume=False))["released"] == []  # too new
    now[0] += 120
    result = asyncio.run(service.reconcile(cull=False, resume=False))
    assert result["released"] == ["s-ended"]
    assert store.get_session("s-ended").stop_reason == "launch ended"
    assert store.get_session("s-running").status == "starting"  # its launch still runs
    assert store.reserve_session(reservation("s-new"), max_total=2, max_of_repo=2).reserved
