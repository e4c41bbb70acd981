"""A TCP proxy that counts round trips: put it between the service and PostgreSQL (or
PgBouncer) and read how often the client spoke, and what it said.

A round trip is a burst of client->server bytes that follows the server's last answer (or
the connection's start): the client sends, then waits for the server. Bytes the client sends
before the server has answered (a pipeline: parse, bind, execute and sync written together,
even in several writes) are one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class Wire:
    """Round trips and client bytes seen so far, on all connections through the proxy."""

    round_trips: int = 0
    sent: bytearray = field(default_factory=bytearray)

    def reset(self) -> None:
        self.round_trips = 0
        self.sent.clear()

    def messages(self) -> list[tuple[bytes, bytes]]:
        """The client's messages since the last reset (type byte, body), past any start-up
        packet at the beginning (which has no type byte)."""
        data = bytes(self.sent)
        found: list[tuple[bytes, bytes]] = []
        at = 0
        while at + 5 <= len(data):
            kind = data[at : at + 1]
            length = int.from_bytes(data[at + 1 : at + 5], "big")
            found.append((kind, data[at + 5 : at + 1 + length]))
            at += 1 + length
        return found


class CountingProxy:
    """`async with CountingProxy(host, port) as proxy:` listens on `proxy.port` (loopback)
    and forwards to `host:port`, counting in `proxy.wire`."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.wire = Wire()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # the pumps then end by themselves
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers.update((writer, up_writer))
        state = {"client_turn": False}  # whether the client is speaking (a round trip begun)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await source.read(65536):
                    if up:
                        if not state["client_turn"]:
                            state["client_turn"] = True
                            self.wire.round_trips += 1
                        self.wire.sent += data
                    else:
                        state["client_turn"] = False
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    sink.close()

        try:
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        finally:
            self._tasks.discard(task)
            self._writers.difference_update((writer, up_writer))
