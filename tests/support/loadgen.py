"""A GET load in its own process, so that what else a test does (holding a thousand slow
connections, say) does not show in the latencies it measures.

    python -m tests.support.loadgen PORT PATH SECONDS CONNECTIONS

sends requests for SECONDS over CONNECTIONS keep-alive connections, one at a time on each,
and prints their latencies (seconds) as a JSON list. Every answer must be a 200.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import uvloop

from tests.support.rawhttp import HOST, read_response


async def load(port: int, path: str, seconds: float, connections: int) -> list[float]:
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    latencies: list[float] = []
    until = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < until:
                sent = time.perf_counter()
                writer.write(request)
                response = await asyncio.wait_for(read_response(reader), 10)
                latencies.append(time.perf_counter() - sent)
                assert response is not None, "the server closed the connection"
                assert response.status == 200, (response.status, response.body[:200])
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return latencies


def main() -> None:
    port, path, seconds, connections = sys.argv[1:5]
    latencies = uvloop.run(load(int(port), path, float(seconds), int(connections)))
    # The parent reads the pipe through its event loop, which made it non-blocking: a write
    # larger than the pipe's buffer would be cut short.
    os.set_blocking(sys.stdout.fileno(), True)
    print(json.dumps(latencies))


if __name__ == "__main__":
    main()
