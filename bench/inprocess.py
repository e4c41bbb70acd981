"""CPU per request of the service's own code, in process, with the database stubbed.

Calls the ASGI app directly (no HTTP server, no network) with `GET /api/v1/tasks/{id}`
requests carrying a real token, after replacing asyncpg's `Connection.fetchrow` with a stub
that returns a fixed row at once. What is left is the Python work of a request: the edge,
CORS, the fast path, authentication and rate limit, the unit of work, the connection
handout, serialization. The one-query ceiling's app (`bench/ceiling_query.py`) is measured
the same way, with its asyncpg `Pool` (or `--lean`, the service's kind of handout).

    .venv/bin/python bench/inprocess.py service    # needs PostgreSQL (schema checked at start)
    .venv/bin/python bench/inprocess.py ceiling [--lean]

Prints microseconds of CPU (process time) per request, best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"  # the bench servers' secret
NOW = dt.datetime(2026, 11, 24, 7, 0, 0, 123456, tzinfo=dt.UTC)
ROW = {
    "id": 8,
    "title": "Task 8 of bench",
    "description": "bench task",
    "completed": False,
    "priority": "high",
    "due_date": None,
    "list_id": None,
    "user_id": "bench-user",
    "created_at": NOW,
    "updated_at": NOW,
    "completed_at": None,
    "version": 1,
    "labels": [],
}


_RECORD: list[tuple[Any, ...]] = []


async def _fetchrow(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
    """PostgreSQL's record of a task (its columns, labels as an array), made once: the stub
    stands for PostgreSQL, at next to no cost."""
    if "array_agg(task_labels.name" not in query:
        return ROW
    if not _RECORD:
        from taskapi.tasks.queries import TASK_FIELDS

        _RECORD.append(tuple(ROW[name] for name in TASK_FIELDS))
    return _RECORD[0]


def _scope(path: str, token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"wrk"),
            (b"authorization", b"Bearer " + token.encode()),
        ],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _measure(app: Any, token: str, n: int, repeat: int, profile: int = 0) -> float:
    import asyncpg.connection

    asyncpg.connection.Connection.fetchrow = _fetchrow
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    best = float("inf")
    for _ in range(repeat + 1):  # the first round warms up
        scopes = [_scope(f"/api/v1/tasks/{8 + i % 100}", token) for i in range(n)]
        sent.clear()
        start = time.process_time()
        for scope in scopes:
            await app(scope, receive, send)
        best = min(best, (time.process_time() - start) / n)
        assert sent[0]["status"] == 200, sent[:2]
    if profile:
        import cProfile
        import pstats

        scopes = [_scope(f"/api/v1/tasks/{8 + i % 100}", token) for i in range(n)]
        with cProfile.Profile() as profiler:
            for scope in scopes:
                await app(scope, receive, send)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(profile)
    return best * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", choices=["service", "ceiling"])
    ap.add_argument("--lean", action="store_true", help="ceiling with the lean handout")
    ap.add_argument("-n", type=int, default=30_000, help="requests per round")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--profile", type=int, default=0, metavar="N", help="then cProfile a round: top N functions"
    )
    ap.add_argument(
        "--pg-url", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    )
    ap.add_argument("--db", default="taskapi_bench", help="a migrated database (make bench)")
    args = ap.parse_args()
    url = f"{args.pg_url.rstrip('/')}/{args.db}"
    os.environ.update(
        DATABASE_URL=url,
        JWT_SECRET=SECRET,
        JWT_ALGORITHM="HS256",
        ENVIRONMENT="production",
        CORS_ORIGINS='["http://localhost:3000"]',
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_PER_MINUTE="100000000",
        RATE_LIMIT_BURST="10000000",
        LOG_LEVEL="WARNING",
        CEILING_ID_MIN="1",
        CEILING_ID_MAX="1",
    )
    if args.lean:
        os.environ["CEILING_POOL"] = "lean"
    import jwt
    from asgi_lifespan import LifespanManager

    token = jwt.encode(
        {"sub": "bench-user", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256"
    )
    if args.which == "ceiling":
        from bench.ceiling_query import app
    else:
        from main import app
    async with LifespanManager(app, startup_timeout=300, shutdown_timeout=60) as manager:
        cpu = await _measure(manager.app, token, args.n, args.repeat, args.profile)
    label = "ceiling (lean)" if args.which == "ceiling" and args.lean else args.which
    print(f"{label}: {cpu:.1f} µs CPU per GET (database stubbed), best of {args.repeat}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
