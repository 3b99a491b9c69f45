"""Liveness and readiness: ``/health`` says the process works, ``/ready`` that it can serve.

A load balancer replaces a server whose ``/health`` fails. If that check asked the store,
a short DynamoDB (or disk) blip would fail every gateway at once and drop every session;
so ``/health`` never waits on the store. The store is asked in the background, off the
event loop, every ``store_probe_seconds``; ``/ready`` fails only once it has not answered
for ``store_outage_grace_seconds``, and ``/health`` reports the same state for people
without failing on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["StoreWatch"]

log = logging.getLogger("binderless.health")

#: How long one probe may take before it counts as unanswered.
PROBE_TIMEOUT_SECONDS = 5.0


class StoreWatch:
    """Whether the store answers, as last seen by a background probe."""

    def __init__(self, probe: Callable[[], object], *, interval: float, grace: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.interval = interval
        self.grace = grace
        self.clock = clock
        self.started = clock()
        self.last_ok: float | None = None
        self.last_error = ""

    async def check_once(self) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self.probe), PROBE_TIMEOUT_SECONDS)
        except Exception as exc:  # a probe reports, it does not raise
            message = str(exc) or type(exc).__name__
            if message != self.last_error:
                log.warning("the store did not answer: %s", message)
            self.last_error = message[:300]
            return
        if self.last_error:
            log.info("the store answers again")
        self.last_ok, self.last_error = self.clock(), ""

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)

    def ready(self) -> bool:
        """Answered within the grace period (a short outage does not count)."""
        return self.last_ok is not None and self.clock() - self.last_ok <= self.grace

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"service": "store", "ok": self.ready()}
        if self.last_ok is not None:
            report["seconds_since_answer"] = round(self.clock() - self.last_ok, 1)
        if self.last_error:
            report["message"] = self.last_error
        return report
