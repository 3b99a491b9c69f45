"""``/api/launches/<id>/estimate`` and ``/api/launches/<id>/cancel`` on an in-process server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from binderless.local import local_service
from binderless.providers.base import ResolvedRepo
from binderless.service import LaunchService
from binderless.settings import Settings
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.functional.inprocess import serve_in_thread


class StuckFetcher:
    """A fetch that never ends until cancelled: the launch waits in ``fetching``."""

    def __init__(self) -> None:
        self.started = threading.Event()

    async def fetch(self, repo: ResolvedRepo, dest: Path, log: object) -> None:
        self.started.set()
        await asyncio.Event().wait()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, LaunchService, StuckFetcher]]:
    settings = Settings(state_dir=tmp_path / "state", final_linger_seconds=0.0,
                        keepalive_seconds=0.2)
    service = local_service(settings)
    fetcher = StuckFetcher()
    service.fetcher = fetcher
    with serve_in_thread(service) as base:
        yield base, service, fetcher


def test_estimate_of_a_launch_from_the_store(
        served: tuple[str, LaunchService, StuckFetcher]) -> None:
    base, service, _ = served
    store = service.store
    for n, seconds in enumerate((12.0, 20.0, 16.0)):
        earlier = f"{n:032x}"
        store.create_launch(earlier, "gh", "org/repo/HEAD", 100.0)
        store.update_launch(earlier, image_key="env1", built=0, phase="ready",
                            finished_at=100.0 + seconds)
    current = "c" * 32
    store.create_launch(current, "gh", "org/repo/HEAD", service.clock() - 4.0)
    store.update_launch(current, image_key="env1", built=0, phase="built")

    answer = httpx.get(f"{base}/api/launches/{current}/estimate")
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers  # asked by no other site
    assert answer.headers["cache-control"] == "no-store"
    estimate = answer.json()
    assert estimate["samples"] == 3 and estimate["typical_seconds"] == 16.0
    assert 0 < estimate["remaining_seconds"] <= 12.0


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/launches/" + "a" * 32 + "/estimate", 404),
    ("GET", "/api/launches/not-a-launch/estimate", 404),
    ("GET", "/api/launches/" + "a" * 32 + "/cancel", 405),
    ("POST", "/api/launches/" + "a" * 32 + "/estimate", 405),
    ("GET", "/api/launches/" + "a" * 32, 404),
    ("GET", "/api/launches/" + "a" * 32 + "/estimate/more", 404),
])
def test_wrong_requests_get_clear_answers(served: tuple[str, LaunchService, StuckFetcher],
                                          method: str, path: str, status: int) -> None:
    base, _, _ = served
    answer = httpx.request(method, base + path)
    assert answer.status_code == status
    assert "message" in answer.json()
    assert "Traceback" not in answer.text


def test_cancel_ends_a_running_launch_with_a_failed_event(
        served: tuple[str, LaunchService, StuckFetcher], tmp_path: Path) -> None:
    base, _, fetcher = served
    repo = make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo")
    seen: list[dict[str, object]] = []
    ids: list[str] = []

    def follow() -> None:
        with httpx.stream("GET", f"{base}/build/{file_spec(repo)}", timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("id:"):
                    ids.append(line[3:].strip())
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    if seen[-1]["phase"] == "failed":
                        return

    reader = threading.Thread(target=follow)
    reader.start()
    assert fetcher.started.wait(30)
    launch_id = ids[0].split(":")[0]
    answer = httpx.post(f"{base}/api/launches/{launch_id}/cancel")
    assert answer.status_code == 202 and answer.json() == {"launch_id": launch_id,
                                                             "cancelled": True}
    reader.join(30)
    assert seen[-1]["phase"] == "failed"
    assert str(seen[-1]["message"]).startswith("The launch was cancelled.")
    # Once ended, there is nothing left to cancel.
    again = httpx.post(f"{base}/api/launches/{launch_id}/cancel").json()
    assert again == {"launch_id": launch_id, "cancelled": False}
