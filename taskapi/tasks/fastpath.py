"""The hot path of the tasks API: task requests served without FastAPI's routing and
dependency injection, which cost more CPU than everything else a request does.

FastAPI declares the API (routes, OpenAPI, `/docs`) and serves every request this path
does not take. This path takes a request only when every input is already known to be
valid (the path's id, the query, a JSON body that validates against the route's own
pydantic model), and then answers it with the same code the declared route runs:
`authenticate_bearer`, `UserProvisioner.ensure`, one `UnitOfWork`, the `service`
functions and the one error renderer. Rows come back already serialized into exactly the
bytes of the route's response model (by PostgreSQL itself: `taskapi.tasks.render`).
Anything else (an invalid id, an unknown query parameter, a body that does not validate,
HEAD) goes to FastAPI untouched, the body replayed, so every answer to bad input is
FastAPI's own.

`tests/tasks/test_fastpath.py` sends the same requests with this path on and off and
requires the same answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from taskapi.auth.dependencies import authenticate_bearer
from taskapi.db import DBSession, UnitOfWork
from taskapi.errors import APIError, api_error_response, unexpected_error_response
from taskapi.middleware import replaying
from taskapi.requestctx import RESPONSE_HEADERS_KEY
from taskapi.services import Services
from taskapi.tasks import service
from taskapi.tasks.render import page_json
from taskapi.tasks.router import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_TASK_ID,
    PREFIX,
    Cursor,
    InvalidCursorError,
    is_json_content_type,
    location,
    next_link,
)
from taskapi.tasks.schemas import Priority, TaskCreate, TaskUpdate

Headers = list[tuple[bytes, bytes]]
Reply = tuple[int, bytes, Headers]
Handler = Callable[[DBSession, str], Awaitable[Reply]]
M = TypeVar("M", TaskCreate, TaskUpdate)

_TASK_PATH = re.compile(r"/([1-9][0-9]{0,18})")
_PAGE_SIZE = re.compile(r"[1-9][0-9]{0,2}")
_BOOLEANS = {"true": True, "false": False}
_PRIORITIES = {p.value: p for p in Priority}
_JSON = (b"content-type", b"application/json")


async def _get(task_id: int, session: DBSession, owner_id: str) -> Reply:
    return 200, (await service.get_task(session, owner_id, task_id))["json"], []


async def _create(data: TaskCreate, session: DBSession, owner_id: str) -> Reply:
    row = await service.create_task(session, owner_id, data)
    return 201, row["json"], [(b"location", location(row["id"]).encode())]


async def _update(task_id: int, data: TaskUpdate, session: DBSession, owner_id: str) -> Reply:
    changes = data.model_dump(exclude_unset=True)
    row = await service.update_task(session, owner_id, task_id, changes)
    return 200, row["json"], []


async def _delete(task_id: int, session: DBSession, owner_id: str) -> Reply:
    await service.delete_task(session, owner_id, task_id)
    return 204, b"", []


async def _list(
    query: list[tuple[str, str]], filters: dict[str, Any], session: DBSession, owner_id: str
) -> Reply:
    limit: int = filters["limit"]
    rows = await service.list_tasks(session, owner_id, **filters)
    headers: Headers = []
    if len(rows) > limit:
        rows = rows[:limit]
        headers.append((b"link", next_link(query, rows[-1]["id"]).encode()))
    return 200, page_json(rows), headers


def _list_filters(query: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The list route's parameters, or None unless each is known, single and valid."""
    filters: dict[str, Any] = {
        "completed": None,
        "priority": None,
        "after_id": None,
        "limit": DEFAULT_PAGE_SIZE,
    }
    seen: set[str] = set()
    for name, value in query:
        if name in seen:
            return None
        seen.add(name)
        if name == "completed" and value in _BOOLEANS:
            filters["completed"] = _BOOLEANS[value]
        elif name == "priority" and value in _PRIORITIES:
            filters["priority"] = _PRIORITIES[value]
        elif name == "limit" and _PAGE_SIZE.fullmatch(value) and int(value) <= MAX_PAGE_SIZE:
            filters["limit"] = int(value)
        elif name == "cursor" and len(value) <= 64:
            try:
                filters["after_id"] = Cursor.decode(value)
            except InvalidCursorError:
                return None
        else:
            return None
    return filters


class TasksFastPath:
    """Pure ASGI, inside the CORS and edge middleware, in front of FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            handler, receive = await self._plan(scope, receive)
            if handler is not None:
                await self._serve(scope, receive, send, handler)
                return
        await self.app(scope, receive, send)

    async def _plan(self, scope: Scope, receive: Receive) -> tuple[Handler | None, Receive]:
        """The handler for a request this path can answer exactly as the route would."""
        rest: str = scope["path"][len(PREFIX) :]
        method: str = scope["method"]
        if not rest:
            if method == "GET":
                query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
                filters = _list_filters(query)
                return (partial(_list, query, filters) if filters is not None else None), receive
            if method == "POST":
                create, receive = await self._body(scope, receive, TaskCreate)
                return (partial(_create, create) if create is not None else None), receive
            return None, receive
        match = _TASK_PATH.fullmatch(rest)
        if match is None or (task_id := int(match[1])) > MAX_TASK_ID:
            return None, receive
        if method == "GET":
            return partial(_get, task_id), receive
        if method == "DELETE":
            return partial(_delete, task_id), receive
        if method == "PUT":
            update, receive = await self._body(scope, receive, TaskUpdate)
            return (partial(_update, task_id, update) if update is not None else None), receive
        return None, receive

    @staticmethod
    async def _body(scope: Scope, receive: Receive, model: type[M]) -> tuple[M | None, Receive]:
        """The body validated as `model`, or None; the returned receive replays it."""
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":  # the first, as Starlette reads it
                content_type = value.decode("latin-1")
                break
        if not is_json_content_type(content_type):
            return None, receive
        message = await receive()
        replay = replaying(message, receive)
        if message["type"] != "http.request" or message.get("more_body", False):
            return None, replay
        try:
            # The parser Starlette's `Request.json()` uses, so FastAPI would see the same.
            return model.model_validate(json.loads(message.get("body", b""))), replay
        except (ValueError, RecursionError, ValidationError):  # incl. JSONDecodeError
            return None, replay

    @staticmethod
    async def _serve(scope: Scope, receive: Receive, send: Send, handler: Handler) -> None:
        services: Services = scope["app"].services
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":  # the first, as Starlette reads it
                authorization = value.decode("latin-1")
                break
        client = scope.get("client")
        try:
            identity = await authenticate_bearer(
                services.verifier,
                services.rate_limits,
                authorization,
                client[0] if client else "unknown",
                scope["path"],
                scope.get(RESPONSE_HEADERS_KEY),
            )
            work = UnitOfWork(services.db, rendered=True)
            try:
                await services.provisioner.ensure(work, identity)
                status, body, headers = await handler(work, identity.sub)
            except BaseException as error:
                await work.finish(error)
                raise
            await work.finish(None)  # committed before anything is sent
        except APIError as error:
            await api_error_response(error)(scope, receive, send)
            return
        except Exception as error:
            response = unexpected_error_response(error, services.settings.retry_after_seconds)
            await response(scope, receive, send)
            return
        if status != 204:
            headers += [_JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
