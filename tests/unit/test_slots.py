"""The FIFO queue behind the caps on builds and server starts."""

from __future__ import annotations

import asyncio

import pytest

from binderless.slots import Slots


class Holder:
    """One caller of ``Slots.hold``: records what it was told, holds until released."""

    def __init__(self, slots: Slots, name: str, order: list[str]) -> None:
        self.told: list[int] = []
        self.release = asyncio.Event()
        self.holding = False
        self.task = asyncio.create_task(self._run(slots, name, order))

    async def _run(self, slots: Slots, name: str, order: list[str]) -> None:
        async with slots.hold(self.told.append):
            self.holding = True
            order.append(name)
            await self.release.wait()
            self.holding = False


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_slots_are_handed_out_in_arrival_order_with_places_told() -> None:
    async def scenario() -> None:
        slots = Slots(2)
        order: list[str] = []
        holders = {name: Holder(slots, name, order) for name in "abcde"}
        await settle()
        assert order == ["a", "b"] and (slots.busy, slots.waiting) == (2, 3)
        assert [holders[n].told for n in "abcde"] == [[], [], [0], [1], [2]]
        holders["b"].release.set()
        await settle()
        assert order == ["a", "b", "c"] and (slots.busy, slots.waiting) == (2, 2)
        assert holders["d"].told == [1, 0] and holders["e"].told == [2, 1]
        # A newcomer while others wait queues behind them, even as a slot frees.
        late = Holder(slots, "late", order)
        holders["a"].release.set()
        await settle()
        assert order == ["a", "b", "c", "d"]
        assert late.told == [2, 1]
        for holder in (*holders.values(), late):
            holder.release.set()
        await asyncio.gather(*(h.task for h in (*holders.values(), late)))
        assert order == ["a", "b", "c", "d", "e", "late"]
        assert (slots.busy, slots.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_those_behind_move_up() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        order: list[str] = []
        a, b, c = (Holder(slots, n, order) for n in "abc")
        await settle()
        b.task.cancel()
        await settle()
        assert b.task.cancelled() and c.told == [1, 0] and slots.waiting == 1
        a.release.set()
        c.release.set()
        await asyncio.gather(a.task, c.task)
        assert order == ["a", "c"] and (slots.busy, slots.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_passes_on() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        order: list[str] = []
        a, b, c = (Holder(slots, n, order) for n in "abc")
        await settle()
        a.release.set()
        await asyncio.sleep(0)  # a releases: the slot goes to b, which has not run yet
        b.task.cancel()
        await settle()
        assert b.task.cancelled()
        assert order == ["a", "c"] and slots.busy == 1
        c.release.set()
        await c.task
        assert (slots.busy, slots.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_queue_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        Slots(0)
