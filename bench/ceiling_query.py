"""Ceiling 2: one asyncpg primary-key SELECT per request.

A bare ASGI app (no framework) holding an asyncpg pool created at lifespan
startup.  Each request runs exactly one ``SELECT ... FROM tasks WHERE id = $1``
and returns the row as JSON (orjson).  It reads the same database as the
service, so the service cannot be faster than this for a one-query endpoint.

Environment:
    DATABASE_URL     postgresql://postgres@127.0.0.1:5432/taskapi_bench
    CEILING_POOL_SIZE  pool size (default 10, the service's default DB_POOL_SIZE)
    CEILING_POOL_RESET  "default": asyncpg's reset query on every release (otherwise
                       none, as in the service)
    CEILING_POOL       "lean": connections handed out first come, first served from a
                       deque, as the service does (here with asyncio.Semaphore, which
                       costs a little more per wait than the service's own slots),
                       instead of through asyncpg's Pool
    BENCH_POOLER       non-empty: PostgreSQL is behind a transaction pooler; statements are
                       sent unnamed, parsed with each bind (one round trip), as the service
                       sends them there
    CEILING_ID_MIN / CEILING_ID_MAX  range for random ids (default: min/max(id)
                       of tasks, read at startup)

Request forms:
    GET /health                 -> {"status": "ok"}
    GET /tasks/<id>             -> the row with that id (404 if absent)
    GET /tasks?random=1 or any other path -> a row with a random id in range

Run:
    DATABASE_URL=... uvicorn bench.ceiling_query:app --loop uvloop \
        --http taskapi.server:HttpToolsProtocol --workers 1 --no-access-log --port 8102
"""

from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import os
import random
from typing import Any

import asyncpg
import orjson

from bench.asgi import Receive, Scope, Send
from taskapi.db.postgres import run_unnamed

_SQL = (
    "SELECT id, title, description, completed, priority, due_date, user_id, "
    "created_at, updated_at FROM tasks WHERE id = $1"
)
_JSON = [(b"content-type", b"application/json")]
_state: dict[str, Any] = {}


def _dsn() -> str:
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/taskapi_bench")
    # accept SQLAlchemy-style URLs too
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _no_reset(connection: Any) -> None:
    return None


_POOLED = bool(os.environ.get("BENCH_POOLER"))
# As the service connects: client_encoding as the server spells it (else PgBouncer sets it
# in every transaction); no statement cache behind a pooler.
_CONNECT: dict[str, Any] = {"server_settings": {"client_encoding": "UTF8"}}
if _POOLED:
    _CONNECT["statement_cache_size"] = 0
_UNNAMED: dict[Any, dict[str, Any]] = {}


async def _fetchrow(connection: Any, sql: str, *args: Any) -> Any:
    """One row, in one round trip (behind a pooler: the unnamed statement, as the service)."""
    if not _POOLED:
        return await connection.fetchrow(sql, *args)
    raw = getattr(connection, "_con", None) or connection  # a pool's proxy: its connection
    rows = await run_unnamed(_UNNAMED.setdefault(raw, {}), raw, sql, args, 1)
    return rows[0] if rows else None


class _LeanPool:
    """CEILING_POOL=lean: connections handed out first come, first served from a deque of
    asyncpg connections, as the service does (here with a FIFO `asyncio.Semaphore`, not the
    service's own slots), without asyncpg's Pool machinery."""

    def __init__(self, connections: list[Any]) -> None:
        self._idle = collections.deque(connections)
        self._slots = asyncio.Semaphore(len(connections))

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        await self._slots.acquire()
        connection = self._idle.pop()
        try:
            return await _fetchrow(connection, sql, *args)
        finally:
            self._idle.append(connection)
            self._slots.release()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._idle))


async def _startup() -> None:
    size = int(os.environ.get("CEILING_POOL_SIZE", "10"))
    if os.environ.get("CEILING_POOL") == "lean":
        pool = _LeanPool([await asyncpg.connect(_dsn(), **_CONNECT) for _ in range(size)])
        await _load_range(pool)
        return
    # As the service's pool: no reset query on release (the default adds a round trip).
    reset = None if os.environ.get("CEILING_POOL_RESET") == "default" else _no_reset
    pool = await asyncpg.create_pool(_dsn(), min_size=size, max_size=size, reset=reset, **_CONNECT)
    await _load_range(pool)


async def _load_range(pool: Any) -> None:
    lo_env = os.environ.get("CEILING_ID_MIN")
    hi_env = os.environ.get("CEILING_ID_MAX")
    row = await pool.fetchrow("SELECT min(id) AS lo, max(id) AS hi FROM tasks")
    lo = int(lo_env) if lo_env is not None else int(row["lo"] or 1)
    hi = int(hi_env) if hi_env is not None else int(row["hi"] or 1)
    _state["pool"] = pool
    _state["lo"], _state["hi"] = lo, hi


def _default(obj: object) -> str:
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    raise TypeError


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await _startup()
                except Exception as exc:  # pragma: no cover - reported to server
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                pool = _state.get("pool")
                if pool is not None:
                    await pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if path == "/health":
        await _send_json(send, 200, b'{"status":"ok"}')
        return
    task_id = None
    if path.startswith("/tasks/") or path.startswith("/api/v1/tasks/"):
        tail = path.rsplit("/", 1)[1]
        if tail.isdigit():
            task_id = int(tail)
    if task_id is None:
        task_id = random.randint(_state["lo"], _state["hi"])
    pool = _state["pool"]
    if _POOLED and not isinstance(pool, _LeanPool):
        async with pool.acquire() as connection:
            row = await _fetchrow(connection, _SQL, task_id)
    else:
        row = await pool.fetchrow(_SQL, task_id)
    if row is None:
        await _send_json(send, 404, b'{"detail":"not found"}')
        return
    await _send_json(send, 200, orjson.dumps(dict(row), default=_default))
