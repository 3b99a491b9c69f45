"""``/health`` (liveness) never waits on the store; ``/ready`` (readiness) tolerates a short
store outage and fails on a long one."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from binderless.local import local_service
from binderless.settings import Settings
from tests.functional.inprocess import serve_in_thread


class FlakyStore:
    """The real store, except that ``count_active`` fails or hangs while told to."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.hang = threading.Event()

    def count_active(self, repo_url: str | None = None) -> int:
        while self.hang.is_set():  # until the test lets go
            time.sleep(0.05)
        if self.down.is_set():
            raise ConnectionError("the table did not answer")
        return int(self.inner.count_active(repo_url))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wait_for(url: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        answer = httpx.get(url, timeout=5)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_a_store_outage_fails_readiness_only_after_its_grace(tmp_path: Path) -> None:
    service = local_service(Settings(state_dir=tmp_path / "state", store_probe_seconds=0.05,
                                     store_outage_grace_seconds=0.5))
    flaky = FlakyStore(service.store)
    service.store = flaky  # type: ignore[assignment]
    with serve_in_thread(service) as base:
        assert httpx.get(base + "/ready").status_code == 200
        health = httpx.get(base + "/health")
        assert health.status_code == 200 and health.json()["store"]["ok"] is True

        flaky.down.set()
        ready = wait_for(base + "/ready", 503)
        assert ready.status_code == 503
        store = next(c for c in ready.json()["checks"] if c["service"] == "store")
        assert store["ok"] is False and "did not answer" in store["message"]
        # The process itself is fine: a load balancer must not replace it.
        health = httpx.get(base + "/health")
        assert health.status_code == 200 and health.json()["ok"] is True
        assert health.json()["store"]["ok"] is False

        flaky.down.clear()
        assert wait_for(base + "/ready", 200).status_code == 200


def test_health_answers_while_the_store_hangs(tmp_path: Path) -> None:
    service = local_service(Settings(state_dir=tmp_path / "state", store_probe_seconds=0.05,
                                     store_outage_grace_seconds=30))
    flaky = FlakyStore(service.store)
    service.store = flaky  # type: ignore[assignment]
    with serve_in_thread(service) as base:
        flaky.hang.set()
        time.sleep(0.2)  # a probe is now stuck in the store
        # Answered while every store call hangs (until the test lets go).
        for path in ("/health", "/ready"):
            assert httpx.get(base + path, timeout=3).status_code == 200, path
        flaky.hang.clear()
