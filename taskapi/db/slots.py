"""First-come, first-served connection slots: the pool's wait for a connection."""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """At most `size` holders at a time. Waiters are served first come, first served (a
    released slot goes straight to the longest waiter, so a newcomer never overtakes it),
    each for at most `timeout` seconds (then `TimeoutError`).

    Not `asyncio.Semaphore` with `asyncio.timeout`, which do the same at several times the
    CPU per wait (see docs/design.md, "Database connections"): under load most requests
    wait for a connection, so this runs on most of them."""

    __slots__ = ("_free", "_size", "_timeout", "_waiters")

    def __init__(self, size: int, timeout: float) -> None:
        self._size = size
        self._free = size
        self._timeout = timeout
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self._free > 0:  # then nobody is waiting: a release hands its slot to a waiter
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self._timeout, _expire, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed a slot, then cancelled before taking it: pass it on
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        if self._free < 0:  # the pool shrank: this slot is taken back
            self._free += 1
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # else it timed out or was cancelled
                waiter.set_result(None)
                return
        self._free += 1

    def resize(self, size: int) -> None:
        """Hold at most `size` from now on: more slots go to the waiters at once; fewer are
        taken back as their holders release them."""
        change, self._size = size - self._size, size
        if change > 0:
            for _ in range(change):
                self.release()
        else:
            self._free += change  # below zero: the next releases pay it back

    @property
    def size(self) -> int:
        return self._size

    def waiting(self) -> int:
        return sum(not waiter.done() for waiter in self._waiters)

    def held(self) -> int:
        return self._size - self._free


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
