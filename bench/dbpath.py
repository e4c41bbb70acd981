"""The path from the servers to PostgreSQL: direct, or through PgBouncer in transaction mode
(`--pooler`) and/or a proxy adding latency both ways (`--db-latency MS`), as where the
service runs (Neon's `-pooler` host is PgBouncer, a network hop away).

Every server of a run (the service, the ceilings, the floor) goes the same way; the
runner's own work (recreating, seeding by SQL, settling) goes straight to PostgreSQL. The
order is the servers, the latency, then PgBouncer next to PostgreSQL, as on Neon.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from urllib.parse import urlsplit

from bench.core import ROOT, log
from bench.options import Options
from bench.processes import adopt, free_port, spawn

_KEEP: list[object] = []  # the run's PgBouncer, alive until the process exits


def _wait_port(port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def start_path(opts: Options) -> str:
    """The `postgresql://user@host:port` the servers connect to (started if need be)."""
    if not opts.pooler and not opts.db_latency_ms:
        return opts.pg_url
    parts = urlsplit(opts.pg_url)
    user = parts.username or "postgres"
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if opts.pooler:
        sys.path.insert(0, str(ROOT))
        from tests.support.pgbouncer import PgBouncer

        bouncer = PgBouncer(
            host,
            port,
            default_pool_size=opts.pooler_pool_size,
            max_client_conn=4000,
            # PgBouncer's defaults (the test harness checks every server connection at
            # each reuse, which a production pooler does not)
            settings={"server_check_delay": 30, "server_idle_timeout": 600},
        )
        bouncer.start()
        # Stopped at exit with the servers (tests.support.pgbouncer only tracks it weakly:
        # once this function returned, its own atexit hook no longer saw it).
        assert bouncer._proc is not None
        adopt(bouncer._proc)
        _KEEP.append(bouncer)
        log(f"pgbouncer (transaction mode) on port {bouncer.port} -> {host}:{port}")
        host, port = "127.0.0.1", bouncer.port
    if opts.db_latency_ms:
        listen = free_port()
        # At a higher priority than the servers (when allowed): it stands for the network,
        # which takes no CPU from them; on a busy machine its wake-ups would otherwise wait
        # for a core and add their wait to the latency.
        nice = ["nice", "-n", "-10"] if os.geteuid() == 0 else []
        spawn(
            [
                *nice,
                sys.executable,
                "-m",
                "bench.latency_proxy",
                str(listen),
                host,
                str(port),
                f"{opts.db_latency_ms:g}",
            ],
            cwd=ROOT,
        )
        _wait_port(listen)
        log(f"latency proxy (+{opts.db_latency_ms:g} ms each way) on {listen} -> {host}:{port}")
        host, port = "127.0.0.1", listen
    return f"postgresql://{user}@{host}:{port}"


def measure_round_trip(url: str, samples: int = 200) -> float:
    """The median time of `SELECT 1` through `url`, in ms (one round trip, unnamed)."""

    async def run() -> float:
        import asyncpg

        connection = await asyncpg.connect(url, statement_cache_size=0)
        try:
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                await connection.execute("SELECT 1")
                times.append(time.perf_counter() - start)
        finally:
            await connection.close()
        times.sort()
        return 1000 * times[len(times) // 2]

    return asyncio.run(run())
