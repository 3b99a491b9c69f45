"""Full capacity: a launch past the server's or the repository's quota ends with a clear
``failed`` event (BinderHub's words for the per-repository limit) and starts nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from binderless.backends.protocols import SessionRecord
from binderless.local import local_service
from binderless.settings import Settings
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.e2e.streams import read_stream
from tests.functional.inprocess import serve_in_thread


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
