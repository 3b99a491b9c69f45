"""The proxy's route cache: the gateway reads a session's route once per few seconds."""

from __future__ import annotations

import asyncio

import pytest

from binderless.backends.protocols import Route
from binderless.errors import SessionNotFound
from binderless.server.proxy import RouteCache


class Table:
    def __init__(self) -> None:
        self.routes = {"s1": Route("s1", "http://10.0.0.5:8888", "tok")}
        self.reads = 0

    def lookup(self, session_id: str) -> Route:
        self.reads += 1
        try:
            return self.routes[session_id]
        except KeyError:
            raise SessionNotFound(f"Session {session_id} is not running.") from None


def test_routes_are_kept_for_their_ttl_and_forgotten_on_demand() -> None:
    table, now = Table(), [100.0]
    cache = RouteCache(table.lookup, ttl=5.0, clock=lambda: now[0])
    assert asyncio.run(cache.get("s1")).target == "http://10.0.0.5:8888"
    assert asyncio.run(cache.get("s1")).token == "tok"
    assert table.reads == 1
    now[0] += 5.0  # expired: read again
    asyncio.run(cache.get("s1"))
    assert table.reads == 2
    cache.forget("s1")  # a forward to it failed
    asyncio.run(cache.get("s1"))
    assert table.reads == 3


def test_unknown_sessions_and_a_zero_ttl_are_never_kept() -> None:
    table = Table()
    cache = RouteCache(table.lookup, ttl=5.0)
    for _ in range(2):
        with pytest.raises(SessionNotFound):
            asyncio.run(cache.get("nope"))
    assert table.reads == 2
    uncached = RouteCache(table.lookup)
    asyncio.run(uncached.get("s1"))
    asyncio.run(uncached.get("s1"))
    assert table.reads == 4
