"""A first-come, first-served queue for scarce work in this process: builds and server starts.

``Slots(limit)`` lets at most ``limit`` holders run at once. Later arrivals wait in
arrival order and are told how many launches are ahead of them, again each time that
number changes, so that the launch's event stream can say so ("3 launches ahead of this
one..."). A waiter that is cancelled (its reader pressed Cancel, or the server stops)
leaves the queue, and those behind it move up. A freed slot goes straight to the first
waiter, so that a newcomer never overtakes the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["Slots"]


@dataclass(eq=False)
class _Waiter:
    tell: Callable[[int], None]
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    told: int = -1


class Slots:
    """At most ``limit`` holders at a time; the rest wait in a FIFO queue (one event loop)."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("a queue needs at least one slot")
        self.limit = limit
        self._busy = 0
        self._queue: list[_Waiter] = []

    @property
    def busy(self) -> int:
        """Slots held now."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Holders-to-be in the queue."""
        return len(self._queue)

    @asynccontextmanager
    async def hold(self, tell: Callable[[int], None]) -> AsyncIterator[None]:
        """Hold a slot for the ``async with`` block. ``tell(ahead)`` is called when this
        caller has to wait (``ahead``: how many wait before it), and again each time the
        queue moves; never when a slot is free at once."""
        await self._acquire(tell)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, tell: Callable[[int], None]) -> None:
        if self._busy < self.limit and not self._queue:
            self._busy += 1
            return
        waiter = _Waiter(tell)
        self._queue.append(waiter)
        self._tell(waiter, len(self._queue) - 1)
        try:
            await waiter.granted
        except BaseException:
            if waiter.granted.done() and not waiter.granted.cancelled():
                # The slot was handed over just as this waiter was cancelled: pass it on.
                self._release()
            elif waiter in self._queue:
                self._queue.remove(waiter)
                self._moved()
            raise

    def _release(self) -> None:
        while self._queue:
            waiter = self._queue.pop(0)
            if waiter.granted.done():  # cancelled, not yet removed by its own task
                continue
            waiter.granted.set_result(None)  # the slot changes hands: ``busy`` stays
            self._moved()
            return
        self._busy -= 1

    def _moved(self) -> None:
        for ahead, waiter in enumerate(self._queue):
            self._tell(waiter, ahead)

    @staticmethod
    def _tell(waiter: _Waiter, ahead: int) -> None:
        if ahead != waiter.told:
            waiter.told = ahead
            waiter.tell(ahead)
