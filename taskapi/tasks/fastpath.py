"""The hot path of the tasks API: task requests served without FastAPI's routing and
dependency injection, which cost more CPU than everything else a request does.

FastAPI declares the API (routes, OpenAPI, `/docs`) and serves every request this path
does not take. This path takes a request only when every input is already known to be
valid (the path's id, the query, a JSON body that validates against the route's own
pydantic model), and then answers it with the same code the declared route runs:
one `UnitOfWork`, `Authenticator.authenticate`, the operation in
`taskapi.tasks.operations` and the one error renderer: only the parsing is its own.
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
from typing import NamedTuple, TypeVar
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from taskapi.auth.dependencies import RequestContext
from taskapi.db import UnitOfWork
from taskapi.db.failures import UserRowMissingError
from taskapi.errors import APIError, exception_response
from taskapi.middleware import replaying
from taskapi.services import Services
from taskapi.tasks import operations
from taskapi.tasks.contract import (
    DEFAULT_PAGE_SIZE,
    MAX_CURSOR_LENGTH,
    MAX_PAGE_SIZE,
    MAX_PRECONDITION_LENGTH,
    MAX_TASK_ID,
    PREFIX,
    SYNC_TOKEN,
    Cursor,
    EntityTags,
    InvalidCursorError,
    InvalidPreconditionError,
    QueryItems,
    TaskFilter,
    idempotency_key,
    is_json_content_type,
)
from taskapi.tasks.operations import Reply
from taskapi.tasks.schemas import Priority, TaskCreate, TaskUpdate

Handler = Callable[[UnitOfWork, str], Awaitable[Reply]]
M = TypeVar("M", TaskCreate, TaskUpdate)

_TASK_PATH = re.compile(r"/([1-9][0-9]{0,18})")
_PAGE_SIZE = re.compile(r"[1-9][0-9]{0,2}")
_BOOLEANS = {"true": True, "false": False}
_PRIORITIES = {p.value: p for p in Priority}


def _list_filter(query: QueryItems) -> TaskFilter | None:
    """The list route's parameters, or None unless each is known, single and valid."""
    completed = priority = after_id = None
    limit: int | None = None
    seen: set[str] = set()
    for name, value in query:
        if name in seen:
            return None
        seen.add(name)
        if name == "completed" and value in _BOOLEANS:
            completed = _BOOLEANS[value]
        elif name == "priority" and value in _PRIORITIES:
            priority = _PRIORITIES[value]
        elif name == "limit" and _PAGE_SIZE.fullmatch(value) and int(value) <= MAX_PAGE_SIZE:
            limit = int(value)
        elif name == "cursor" and len(value) <= MAX_CURSOR_LENGTH:
            try:
                after_id = Cursor.decode(value)
            except InvalidCursorError:
                return None
        else:
            return None
    page = TaskFilter(completed, priority, after_id)
    return page if limit is None else page._replace(limit=limit)


def _query(scope: Scope) -> list[tuple[str, str]]:
    return parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)


def _feed_query(query: QueryItems) -> tuple[str | None, int] | None:
    """The change feed's `since` and `limit`, or None unless each is known, single and
    well-formed (the token itself is checked by the operation, as on the route)."""
    since: str | None = None
    limit = DEFAULT_PAGE_SIZE
    seen: set[str] = set()
    for name, value in query:
        if name in seen:
            return None
        seen.add(name)
        if name == "since" and SYNC_TOKEN.fullmatch(value):
            since = value
        elif name == "limit" and _PAGE_SIZE.fullmatch(value) and int(value) <= MAX_PAGE_SIZE:
            limit = int(value)
        else:
            return None
    return since, limit


class _Headers(NamedTuple):
    """The request headers the task routes read (the first of each, as Starlette reads)."""

    content_type: str | None
    if_match: EntityTags | None
    if_none_match: EntityTags | None
    idempotency_key: str | None

    @staticmethod
    def of(scope: Scope) -> _Headers | None:
        """The headers, or None unless each is well-formed (FastAPI answers the others)."""
        found: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _READ and name not in found:
                found[name] = value.decode("latin-1")
        if not found:
            return _NO_HEADERS
        try:
            return _Headers(
                found.get(b"content-type"),
                _tags("If-Match", found.get(b"if-match")),
                _tags("If-None-Match", found.get(b"if-none-match")),
                idempotency_key(found.get(b"idempotency-key")),
            )
        except APIError:
            return None


_READ = frozenset({b"content-type", b"if-match", b"if-none-match", b"idempotency-key"})
_NO_HEADERS = _Headers(None, None, None, None)


def _tags(header: str, value: str | None) -> EntityTags | None:
    if value is not None and len(value) > MAX_PRECONDITION_LENGTH:
        raise InvalidPreconditionError(header)
    return EntityTags.parse(header, value)


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
        headers = _Headers.of(scope)
        if headers is None:
            return None, receive
        if not rest:
            if method == "GET":
                query = _query(scope)
                page = _list_filter(query)
                if page is None:
                    return None, receive
                return (lambda work, sub: operations.list_tasks(work, sub, page, query)), receive
            if method == "POST":
                create, receive = await self._body(headers, receive, TaskCreate)
                if create is None:
                    return None, receive
                key, sync = headers.idempotency_key, scope["app"].services.sync
                return (
                    lambda work, sub: operations.create_task(work, sub, create, key, sync)
                ), receive
            return None, receive
        if rest == "/changes" and method == "GET":
            feed = _feed_query(_query(scope))
            if feed is None:
                return None, receive
            since, limit = feed
            sync = scope["app"].services.sync
            return (
                lambda work, sub: operations.task_changes(work, sub, since, limit, sync)
            ), receive
        match = _TASK_PATH.fullmatch(rest)
        if match is None or (task_id := int(match[1])) > MAX_TASK_ID:
            return None, receive
        if method == "GET":
            fresh = headers.if_none_match
            return (lambda work, sub: operations.get_task(work, sub, task_id, fresh)), receive
        if_match = headers.if_match
        if method == "DELETE":
            return (lambda work, sub: operations.delete_task(work, sub, task_id, if_match)), receive
        if method in ("PUT", "PATCH"):
            update, receive = await self._body(headers, receive, TaskUpdate)
            if update is None:
                return None, receive
            return (
                lambda work, sub: operations.update_task(work, sub, task_id, update, if_match)
            ), receive
        return None, receive

    @staticmethod
    async def _body(
        headers: _Headers, receive: Receive, model: type[M]
    ) -> tuple[M | None, Receive]:
        """The body validated as `model`, or None; the returned receive replays it."""
        if not is_json_content_type(headers.content_type):
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
        try:
            try:
                async with UnitOfWork(services.db) as work:
                    context = RequestContext.of(scope)
                    identity = await services.authenticator.authenticate(context, work)
                    reply = await handler(work, identity.sub)
            except UserRowMissingError as gone:
                if gone.owner_id is None:
                    raise
                # The user's row was deleted by another worker (`DELETE /api/v1/me`): once
                # more, with the user provisioned afresh.
                services.authenticator.provisioner.forget(gone.owner_id)
                reply = await _run(services, scope, handler)
            # committed before anything is sent
        except Exception as error:
            await exception_response(error)(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": reply.status, "headers": reply.wire_headers()}
        )
        await send({"type": "http.response.body", "body": reply.body})


async def _run(services: Services, scope: Scope, handler: Handler) -> Reply:
    """The request's reply, in a unit of work of its own (committed when this returns)."""
    async with UnitOfWork(services.db) as work:
        identity = await services.authenticator.authenticate(RequestContext.of(scope), work)
        return await handler(work, identity.sub)
