"""A TCP proxy that delays every byte by a fixed time in each direction: PostgreSQL a
network hop away, for `make bench --db-latency MS`.

    python -m bench.latency_proxy LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT DELAY_MS

Each chunk read from one side is written to the other `DELAY_MS` later, in order (one
queue and one timer per direction; bytes are never reordered or coalesced across the delay).
It runs on uvloop; timers there have millisecond resolution, so the delay added is DELAY_MS
plus up to about a millisecond: the runner measures and prints the round trip it gives.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from typing import Any


class _Delayed:
    """Writes to `transport` what `push` gets, `delay` seconds later, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._loop = loop
        self._delay = delay
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self._closing = False

    def push(self, data: bytes) -> None:
        due = self._loop.time() + self._delay
        self._queue.append((due, data))
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._flush)

    def close_after(self) -> None:
        self._closing = True
        if self._timer is None:
            self._close()

    def _flush(self) -> None:
        self._timer = None
        if self.transport is None:  # the upstream connection is not made yet
            self._timer = self._loop.call_later(0.0005, self._flush)
            return
        now = self._loop.time()
        queue = self._queue
        while queue and queue[0][0] <= now:
            data = queue.popleft()[1]
            if not self.transport.is_closing():
                self.transport.write(data)
        if queue:
            self._timer = self._loop.call_at(queue[0][0], self._flush)
        elif self._closing:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Side(asyncio.Protocol):
    """One connection's end; what it receives goes, delayed, to the other end."""

    def __init__(self, out: _Delayed, back: _Delayed) -> None:
        self._out = out  # towards the other side
        self._back = back  # towards this side's own transport
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._back.transport = transport
        transport.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY

    def data_received(self, data: bytes) -> None:
        self._out.push(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._out.close_after()


_connecting: set[asyncio.Task[None]] = set()


async def _serve(listen: int, host: str, port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()

    def client_side() -> asyncio.Protocol:
        up = _Delayed(loop, delay)  # client -> server
        down = _Delayed(loop, delay)  # server -> client
        side = _Side(up, down)

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: _Side(down, up), host, port)
            except OSError:
                if side.transport is not None:
                    side.transport.close()

        task = loop.create_task(connect())
        _connecting.add(task)
        task.add_done_callback(_connecting.discard)
        return side

    server = await loop.create_server(client_side, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen, host, port, delay_ms = argv
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(_serve(int(listen), host, int(port), float(delay_ms) / 1000))


if __name__ == "__main__":
    main(sys.argv[1:])
