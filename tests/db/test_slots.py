"""The connection handout's slots: bounded, first come first served, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from taskapi.db.slots import Slots


async def turns(count: int = 5) -> None:
    """Let the event loop run a few turns (no time passes)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_slots_are_bounded_and_served_in_arrival_order() -> None:
    slots = Slots(2, timeout=60)
    await slots.acquire()
    await slots.acquire()
    served: list[int] = []

    async def wait(number: int) -> None:
        await slots.acquire()
        served.append(number)

    waiters = [asyncio.create_task(wait(number)) for number in range(4)]
    await turns()
    assert served == []
    assert slots.waiting() == 4
    for _ in range(4):
        slots.release()
    await asyncio.gather(*waiters)
    assert served == [0, 1, 2, 3]
    assert slots.waiting() == 0
    assert slots._free == 0


async def test_a_released_slot_is_not_taken_by_a_newcomer() -> None:
    slots = Slots(1, timeout=60)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    await turns()
    slots.release()  # handed to `first`, which has not run yet
    newcomer = asyncio.create_task(slots.acquire())
    await turns()
    assert first.done()
    assert not newcomer.done()
    slots.release()
    await newcomer


async def test_a_timed_out_waiter_takes_no_slot() -> None:
    slots = Slots(1, timeout=0)
    await slots.acquire()
    with pytest.raises(TimeoutError):
        await slots.acquire()
    slots.release()
    assert slots._free == 1  # the slot went back, not to the timed-out waiter
    await slots.acquire()


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    slots = Slots(1, timeout=60)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await turns()
    waiter.cancel()
    await turns()
    slots.release()
    assert slots._free == 1
    assert waiter.cancelled()


async def test_a_waiter_cancelled_after_it_was_handed_a_slot_passes_it_on() -> None:
    slots = Slots(1, timeout=60)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await turns()
    slots.release()  # to `first` ...
    first.cancel()  # ... cancelled before it could run
    await second  # so the slot went on to `second`
    assert first.cancelled()
    slots.release()
    assert slots._free == 1


async def test_a_grown_pool_serves_its_waiters_and_a_shrunk_one_takes_slots_back() -> None:
    slots = Slots(1, timeout=60)
    await slots.acquire()
    waiters = [asyncio.create_task(slots.acquire()) for _ in range(3)]
    await turns()
    slots.resize(3)  # two more: the two longest waiters get them at once
    await turns()
    assert [w.done() for w in waiters] == [True, True, False]
    slots.resize(1)  # three held, one allowed: two releases pay the difference back
    slots.release()
    slots.release()
    await turns()
    assert not waiters[2].done()
    slots.release()  # now within the size: the last waiter gets it
    await asyncio.gather(*waiters)
    assert slots.size == 1
    slots.release()
    await slots.acquire()  # one free slot, no more
    assert slots._free == 0


def test_the_adaptive_pool_grows_with_the_round_trip() -> None:
    from taskapi.db.postgres import pool_size_for

    assert pool_size_for(0.0001) == 10  # next to the database
    assert pool_size_for(0.0022) == 18  # 1 ms away, each way
    assert pool_size_for(0.0105) == 52  # 5 ms away
    assert pool_size_for(0.1) == 64
