"""Quotas, the start queue and the cleanup of anonymous sessions with the real local
backends: a real server, uv environment and Jupyter servers."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import file_spec, start_server, stop_server
from tests.e2e.streams import Stream, read_stream

pytestmark = pytest.mark.e2e


def test_simultaneous_launches_queue_for_starts_stay_within_quota_and_leave_no_files(
        tmp_path: Path, fixture_repo: Callable[[str], Path]) -> None:
    repo = fixture_repo("python-requirements")
    state = tmp_path / "state"
    server = start_server(state, "--max-sessions", "2", "--max-concurrent-starts", "1")
    try:
        url = server.url(f"/build/{file_spec(repo)}")
        # Three at once: one builds the environment, the other two follow that build.
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            streams: list[Stream] = list(pool.map(lambda _i: read_stream(url), range(3)))
        finals = [s.final for s in streams]
        ready = [s for s in streams if s.final["phase"] == "ready"]
        refused = [f for f in finals if f["phase"] == "failed"]
        assert len(ready) == 2 and len(refused) == 1, [s.text() for s in streams]
        assert refused[0]["status_code"] == 429
        assert "This server is full: 2 sessions are running" in refused[0]["message"]
        # One Jupyter server starts at a time: the others were told they wait for a slot.
        notes = [e["message"] for s in ready for e in s.events
                 if e.get("queue") == "start"]
        assert notes and all(n.startswith("Waiting for a free start slot: ") for n in notes)
        sessions = sorted(p.name for p in (state / "sessions").iterdir())
        assert sessions == sorted(s.final["url"].rstrip("/").rsplit("/", 1)[1] for s in ready)
    finally:
        stop_server(server)
    # The server stopped its sessions as it exited; anonymous sessions leave no files.
    assert list((state / "sessions").iterdir()) == []
