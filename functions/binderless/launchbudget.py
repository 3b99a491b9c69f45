"""A per-client-address budget of launches, kept by one gateway process: ``LaunchBudget``.

Each client address may start ``per_window`` launches in any ``window`` seconds (a token
bucket: the budget refills evenly, so a burst of ``per_window`` is allowed and then one
launch every ``window / per_window`` seconds). What counts is what starts a launch: a
``/build`` request that resumes no earlier launch, and ``POST /api/launches``.

It is per process, in memory: each gateway task keeps its own, so behind a load balancer
with N tasks an address may get up to N times the budget, and a restart forgets it. It
bounds what one address costs one gateway; the edge's rate rule (WAF, ``WebAcl``) is the
deployment-wide limit. At most ``max_addresses`` addresses are remembered; past that the
ones with a full budget (or, failing that, the least recently seen) are forgotten, so a
flood of addresses cannot grow the process.

``client_address`` names the address to count: behind ``trusted_hops`` proxies that each
append the address they saw to ``X-Forwarded-For`` (on AWS: CloudFront, then the load
balancer), the one the outermost trusted proxy saw; entries further left are the
client's own claims and never trusted.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["LaunchBudget", "client_address"]


def client_address(remote: str, forwarded_for: str, trusted_hops: int) -> str:
    """The client's address: ``remote`` itself with no trusted proxy, else the entry of
    ``X-Forwarded-For`` the outermost of ``trusted_hops`` proxies appended (``remote`` is
    the nearest proxy). A header shorter than the chain (a request that skipped a proxy)
    gives its leftmost entry, or ``remote`` with none."""
    if trusted_hops <= 0:
        return remote
    chain = [entry.strip() for entry in forwarded_for.split(",") if entry.strip()]
    chain.append(remote)
    return chain[max(0, len(chain) - 1 - trusted_hops)]


class LaunchBudget:
    """Token buckets by client address (thread-unsafe: the gateway's event loop owns it)."""

    def __init__(self, per_window: int, window: float = 300.0, *, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_window < 0 or window <= 0 or max_addresses <= 0:
            raise ValueError("a launch budget needs per_window >= 0 (0: none), window > 0 "
                             "and max_addresses > 0")
        self.per_window = per_window
        self.window = window
        self.max_addresses = max_addresses
        self.clock = clock
        #: address -> (tokens left, when they were counted), least recently seen first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.per_window > 0

    def _level(self, address: str, now: float) -> float:
        tokens, then = self._buckets.get(address, (float(self.per_window), now))
        return min(float(self.per_window), tokens + (now - then) * self.per_window / self.window)

    def take(self, address: str) -> float:
        """Count one launch from ``address``: 0.0 when allowed, else the seconds until one
        more would be."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        tokens = self._level(address, now)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            self._buckets.move_to_end(address)
            return (1.0 - tokens) * self.window / self.per_window
        self._buckets[address] = (tokens - 1.0, now)
        self._buckets.move_to_end(address)
        self._forget(now)
        return 0.0

    def _forget(self, now: float) -> None:
        if len(self._buckets) <= self.max_addresses:
            return
        # A full bucket is the same as none: forget those first, then the oldest.
        for address in [a for a in self._buckets if self._level(a, now) >= self.per_window]:
            del self._buckets[address]
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
