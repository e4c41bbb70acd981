"""Development stub of the service contract (bench-only, NOT the service).

A bare ASGI + asyncpg implementation of the endpoints the benchmark drives,
used to develop and smoke-test ``bench/run.py`` before ``main:app`` exists:

    python bench/run.py --quick --app bench.stub_app:app

It trusts HS256 tokens signed with JWT_SECRET, upserts the user on first
sight, and implements GET/PUT/DELETE by id, POST, and keyset-paginated list
with a ``Link: <...>; rel="next"`` header.  No validation beyond the minimum.
"""

from __future__ import annotations

import base64
import os

import asyncpg  # type: ignore[import-untyped]
import jwt
import orjson

_state: dict = {}
_COLS = "id, title, description, completed, priority, due_date, user_id, created_at, updated_at"


def _dsn() -> str:
    return os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")


async def _send(send, status, obj=None, headers=()):
    body = b"" if obj is None else orjson.dumps(obj)
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def _body(receive) -> bytes:
    chunks = []
    while True:
        m = await receive()
        chunks.append(m.get("body", b""))
        if not m.get("more_body"):
            return b"".join(chunks)


async def _user(pool, scope):
    auth = dict(scope["headers"]).get(b"authorization", b"").decode()
    if not auth.startswith("Bearer "):
        return None
    try:
        claims = jwt.decode(auth[7:], os.environ["JWT_SECRET"], algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    uid = claims["sub"]
    seen = _state["users"]
    if uid not in seen:
        await pool.execute(
            "INSERT INTO users (id, email, name, created_at, updated_at) "
            "VALUES ($1,$2,$3,now(),now()) "
            "ON CONFLICT (id) DO NOTHING",
            uid,
            claims.get("email"),
            claims.get("name"),
        )
        seen.add(uid)
    return uid


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                _state["pool"] = await asyncpg.create_pool(_dsn(), min_size=10, max_size=10)
                _state["users"] = set()
                await send({"type": "lifespan.startup.complete"})
            else:
                await _state["pool"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, method = scope["path"], scope["method"]
    if path == "/health":
        return await _send(send, 200, {"status": "ok"})
    if not path.startswith("/api/v1/tasks"):
        return await _send(send, 404, {"detail": "Not Found"})
    pool = _state["pool"]
    uid = await _user(pool, scope)
    if uid is None:
        return await _send(send, 401, {"detail": "unauthorized"})
    tail = path[len("/api/v1/tasks") :].strip("/")
    if not tail:
        if method == "POST":
            d = orjson.loads(await _body(receive))
            row = await pool.fetchrow(
                "INSERT INTO tasks (title, description, completed, priority, due_date, user_id, "
                "created_at, updated_at) "
                "VALUES ($1,$2,false,$3,$4::text::timestamptz,$5,now(),now()) "
                f"RETURNING {_COLS}",
                d["title"],
                d.get("description"),
                d.get("priority"),
                d.get("due_date"),
                uid,
            )
            return await _send(send, 201, dict(row))
        q = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        limit = min(int(q.get("limit", 100)), 500)
        where, args = ["user_id = $1"], [uid]
        if "completed" in q:
            args.append(q["completed"] == "true")
            where.append(f"completed = ${len(args)}")
        if "priority" in q:
            args.append(q["priority"])
            where.append(f"priority = ${len(args)}")
        if "cursor" in q:
            args.append(int(base64.urlsafe_b64decode(q["cursor"] + "==")))
            where.append(f"id < ${len(args)}")
        args.append(limit + 1)
        rows = await pool.fetch(
            f"SELECT {_COLS} FROM tasks WHERE {' AND '.join(where)} "
            f"ORDER BY id DESC LIMIT ${len(args)}",
            *args,
        )
        headers = []
        if len(rows) > limit:
            rows = rows[:limit]
            cur = base64.urlsafe_b64encode(str(rows[-1]["id"]).encode()).decode().rstrip("=")
            qs = "&".join(f"{k}={v}" for k, v in q.items() if k != "cursor")
            headers.append((b"link", f'</api/v1/tasks?{qs}&cursor={cur}>; rel="next"'.encode()))
        return await _send(send, 200, [dict(r) for r in rows], headers)
    if not tail.isdigit():
        return await _send(send, 404, {"detail": "Not Found"})
    tid = int(tail)
    if method == "GET":
        row = await pool.fetchrow(f"SELECT {_COLS} FROM tasks WHERE id=$1 AND user_id=$2", tid, uid)
    elif method == "PUT":
        d = orjson.loads(await _body(receive))
        row = await pool.fetchrow(
            "UPDATE tasks SET completed = coalesce($3, completed), "
            "priority = coalesce($4, priority), "
            f"updated_at = now() WHERE id=$1 AND user_id=$2 RETURNING {_COLS}",
            tid,
            uid,
            d.get("completed"),
            d.get("priority"),
        )
    elif method == "DELETE":
        r = await pool.execute("DELETE FROM tasks WHERE id=$1 AND user_id=$2", tid, uid)
        return await _send(send, 204 if r.endswith("1") else 404)
    else:
        return await _send(send, 405, {"detail": "method not allowed"})
    if row is None:
        return await _send(send, 404, {"detail": "not found"})
    return await _send(send, 200, dict(row))
