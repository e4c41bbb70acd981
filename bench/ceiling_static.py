"""Ceiling 1: the HTTP stack alone.

A bare ASGI app (no framework, no database) that answers every request with
one fixed, pre-serialised task JSON.  Run it under exactly the same server and
flags as the service, e.g.

    uvicorn bench.ceiling_static:app --loop uvloop --http taskapi.server:HttpToolsProtocol \
        --workers 1 --no-access-log --port 8101

Whatever the service reaches as a fraction of this number is the share of the
HTTP stack (uvicorn + uvloop + httptools, the service's protocol) in its cost per request.
"""

from __future__ import annotations

import orjson

from bench.asgi import Receive, Scope, Send

_TASK = {
    "id": 1,
    "title": "Write the quarterly report",
    "description": "Collect numbers from every team and summarise them.",
    "completed": False,
    "priority": "high",
    "due_date": "2030-01-01T12:00:00+00:00",
    "user_id": "user-000001",
    "created_at": "2024-01-01T00:00:00+00:00",
    "updated_at": "2024-01-01T00:00:00+00:00",
}
_BODY = orjson.dumps(_TASK)
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
]
_START = {"type": "http.response.start", "status": 200, "headers": _HEADERS}
_MSG = {"type": "http.response.body", "body": _BODY}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_MSG)
