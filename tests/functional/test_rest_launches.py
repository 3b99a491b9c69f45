"""``POST /api/launches`` on the local server: a launch from a REST client, followed over
its stream, with an ``Idempotency-Key`` that makes a retried request safe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from binderless.local import local_service
from binderless.settings import Settings
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.e2e.streams import read_stream
from tests.functional.inprocess import serve_in_thread


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    settings = Settings(state_dir=tmp_path / "state", final_linger_seconds=0.0,
                        keepalive_seconds=0.2)
    with serve_in_thread(local_service(settings)) as url:
        yield url


def test_a_created_launch_is_followed_through_its_stream_url(base: str, tmp_path: Path) -> None:
    repo = make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo")
    spec = file_spec(repo, "no-such-branch")  # fails fast, at resolving, with no build
    provider, _, rest = spec.partition("/")
    answer = httpx.post(f"{base}/api/launches", json={"provider": provider, "spec": rest},
                        headers={"Idempotency-Key": "k-1"})
    assert answer.status_code == 202, answer.text
    created = answer.json()
    launch = created["launch_id"]
    assert created["stream_url"] == f"{base}/build/{spec}?last_event_id={launch}:0"
    assert httpx.post(f"{base}/api/launches", json={"provider": provider, "spec": rest},
                      headers={"Idempotency-Key": "k-1"}).json() == created

    stream = read_stream(created["stream_url"], timeout=60)
    assert stream.events[0]["phase"] == "waiting"
    assert stream.final["phase"] == "failed"
    assert "Could not resolve ref" in stream.final["message"]
    assert {i.split(":")[0] for i in stream.ids} == {launch}

    status = httpx.get(created["status_url"]).json()
    assert status["phase"] == "failed" and status["spec"] == rest
    assert "request" not in status and "driver" not in status
    events = httpx.get(created["events_url"] + "?after=1").json()["events"]
    assert events[0]["id"] == f"{launch}:2" and events[-1]["phase"] == "failed"


@pytest.mark.parametrize(("body", "status", "says"), [
    ("not json", 400, "must be a JSON object"),
    ({"provider": "gh"}, 400, "Name the repository"),
    ({"link": "gh/org/repo/HEAD", "build_only": "yes"}, 400, "build_only must be"),
    ({"provider": "nope", "spec": "x/y"}, 400, "No provider found"),
    ({"link": "gh/org/re\npo/HEAD"}, 400, "control characters"),
])
def test_a_bad_request_gets_a_clear_answer_and_creates_nothing(
        base: str, body: object, status: int, says: str) -> None:
    if isinstance(body, str):
        answer = httpx.post(f"{base}/api/launches", content=body)
    else:
        answer = httpx.post(f"{base}/api/launches", json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["message"]
    assert "Traceback" not in answer.text
    assert httpx.get(f"{base}/api/launches").status_code == 405
