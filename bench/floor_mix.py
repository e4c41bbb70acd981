"""The mix's floor: the service's own SQL for each request, and nothing else.

A bare ASGI app that answers the benchmark's four requests (GET by id, a filtered list
page, create, update) with exactly the statements the service runs for them (its compiled,
PostgreSQL queries from `taskapi.tasks.queries`), on connections handed out as
the service hands them out (first come, first served; `DB_POOL_SIZE` of them), and renders
each row as the service does (`rendered_from_record`). None of the service's features: the
token is not verified (its `sub` is read from the payload, once per distinct header), no
rate limit, no request id, no CORS, no validation beyond what the statements need, no error
handling.

So no implementation of these requests, with these statements, on this server and these
flags, can run the mix faster than this app: it shows how much of the mix's distance to
the one-query ceiling is the requests themselves (their SQL, their bytes), and how much
is the service's features. `bench/run.py` measures it in the same run as the ceilings.

    DATABASE_URL=... uvicorn bench.floor_mix:app --loop uvloop \
        --http taskapi.server:HttpToolsProtocol --workers 1 --no-access-log --port 8103
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taskapi.db.postgres import run_unnamed
from taskapi.tasks import queries as service
from taskapi.tasks.contract import PREFIX, Cursor, next_link
from taskapi.tasks.queries import rendered_from_record
from taskapi.tasks.render import page_json

_JSON = (b"content-type", b"application/json")
_state: dict[str, Any] = {}
_subs: dict[bytes, str] = {}
_EXTRA = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-request-id", b"28e1083af96d3b14b50aa91badd9e6eb"),
    (b"vary", b"Origin"),
    (b"ratelimit-policy", b'"user";q=100000000;w=60'),
    (b"ratelimit", b'"user";r=9999998;t=1'),
]


def _dsn() -> str:
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/taskapi_bench")
    return url.replace("postgresql+asyncpg://", "postgresql://")


_POOLED = bool(os.environ.get("BENCH_POOLER"))  # behind a pooler: unnamed, as the service
_CONNECT: dict[str, Any] = {"server_settings": {"client_encoding": "UTF8"}}
if _POOLED:
    _CONNECT["statement_cache_size"] = 0
_UNNAMED: dict[Any, dict[str, Any]] = {}


class _Connections:
    """`size` connections, handed out first come, first served (as the service does)."""

    def __init__(self, connections: list[Any]) -> None:
        self._idle = collections.deque(connections)
        self._slots = asyncio.Semaphore(len(connections))

    async def run(self, method: str, sql: str, args: list[Any]) -> Any:
        await self._slots.acquire()
        connection = self._idle.pop()
        try:
            if not _POOLED:
                return await getattr(connection, method)(sql, *args)
            statements = _UNNAMED.setdefault(connection, {})
            rows = await run_unnamed(statements, connection, sql, args, int(method == "fetchrow"))
            return (rows[0] if rows else None) if method == "fetchrow" else rows
        finally:
            self._idle.append(connection)
            self._slots.release()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._idle))


def _owner(scope: dict[str, Any]) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            sub = _subs.get(value)
            if sub is None:
                payload = value.split(b".")[1]
                sub = _subs[value] = orjson.loads(base64.urlsafe_b64decode(payload + b"=="))["sub"]
            return sub
    raise LookupError("no token")


async def _body(receive: Any) -> Any:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return orjson.loads(b"".join(chunks))


async def _run(query: Any, method: str, params: dict[str, Any]) -> Any:
    return await _state["db"].run(method, query.sql, query.arguments(params))


async def _get(owner: str, task_id: int) -> tuple[int, bytes, list[Any]]:
    row = await _run(service.GET_TASK, "fetchrow", {"owner_id": owner, "task_id": task_id})
    if row is None:
        return 404, b'{"detail":"not found"}', []
    return 200, rendered_from_record(row).json, []


async def _list(owner: str, query: str) -> tuple[int, bytes, list[Any]]:
    pairs = parse_qsl(query)
    filters = dict(pairs)
    limit = int(filters.get("limit", "20"))
    params: dict[str, Any] = {"owner_id": owner, "page_size": limit + 1}
    if "completed" in filters:
        params["completed"] = filters["completed"] == "true"
    if "priority" in filters:
        params["priority"] = filters["priority"]
    if "cursor" in filters:
        params["after_id"] = Cursor.decode(filters["cursor"])
    statement = service.list_statement("completed" in params, "priority" in params, False)
    rows = await _run(statement, "fetch", params)
    headers: list[tuple[bytes, bytes]] = []
    if len(rows) > limit:
        rows = rows[:limit]
        headers.append((b"link", next_link(pairs, rows[-1]["id"]).encode()))
    return 200, page_json([rendered_from_record(row) for row in rows]), headers


async def _create(owner: str, data: dict[str, Any]) -> tuple[int, bytes, list[Any]]:
    now = dt.datetime.now(dt.UTC)
    due = data.get("due_date")
    params = {
        "title": data["title"],
        "description": data.get("description"),
        "completed": data.get("completed", False),
        "priority": data.get("priority"),
        "due_date": dt.datetime.fromisoformat(due) if due else None,
        "list_id": data.get("list_id"),
        "user_id": owner,
        "created_at": now,
        "updated_at": now,
        "completed_at": now if data.get("completed") else None,
        "owner_id": owner,  # the owner's change number (the change feed)
    }
    row = await _run(service.CREATE_TASK, "fetchrow", params)
    return 201, rendered_from_record(row).json, [(b"location", f"{PREFIX}/{row['id']}".encode())]


async def _update(owner: str, task_id: int, data: dict[str, Any]) -> tuple[int, bytes, list[Any]]:
    data["updated_at"] = dt.datetime.now(dt.UTC)
    params = {f"new_{name}": value for name, value in data.items()}
    params.update(owner_id=owner, task_id=task_id)
    row = await _run(service.update_statement(frozenset(data)), "fetchrow", params)
    if row is None:
        return 404, b'{"detail":"not found"}', []
    return 200, rendered_from_record(row).json, []


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            size = int(os.environ.get("DB_POOL_SIZE", "10"))
            connections = [await asyncpg.connect(_dsn(), **_CONNECT) for _ in range(size)]
            _state["db"] = _Connections(connections)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if "db" in _state:
                await _state["db"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: str = scope["path"]
    method: str = scope["method"]
    headers: list[tuple[bytes, bytes]]
    if path == "/health":
        status, body, headers = 200, b'{"status":"ok"}', []
    else:
        owner = _owner(scope)
        rest = path[len(PREFIX) :].lstrip("/")
        if not rest and method == "GET":
            status, body, headers = await _list(owner, scope["query_string"].decode())
        elif not rest and method == "POST":
            status, body, headers = await _create(owner, await _body(receive))
        elif method == "PUT":
            status, body, headers = await _update(owner, int(rest), await _body(receive))
        else:
            status, body, headers = await _get(owner, int(rest))
    headers += [_JSON, (b"content-length", str(len(body)).encode())]
    if os.environ.get("FLOOR_HEADERS"):
        headers += _EXTRA
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
