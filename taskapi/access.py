"""The access layer: the outermost pure ASGI layer, so it sees every request, the fast
path's and those the edge refuses: method, route template, status, duration and user, to
the access log and the request metrics.

It costs a request a few microseconds: the route template is a dictionary lookup (or, for
a path with a parameter, one regular expression), and what it records is written out in
batches (`Recorder`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Sequence
from time import perf_counter

from fastapi.routing import iter_route_contexts
from starlette.convertors import StringConvertor
from starlette.routing import BaseRoute, Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskapi.logs import AccessLog
from taskapi.metrics import Metrics
from taskapi.requestctx import EXCHANGE_KEY, Exchange, request_id

logger = logging.getLogger("taskapi.metrics")

UNMATCHED_ROUTE = "(unmatched)"
"""The route of a path no route matches: never the raw path, which may hold anything."""
OTHER_METHOD = "OTHER"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RouteTemplates:
    """A path's route template (`/api/v1/tasks/{task_id}`), from the app's own routes."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._exact: dict[str, str] = {}
        # `/parent/{name}` with a plain (str) parameter: the parent, then a dictionary lookup.
        self._last_segment: dict[str, str] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        # FastAPI keeps included routers as such; their routes' contexts have the full paths.
        for context in iter_route_contexts(routes):
            route = context.original_route
            if isinstance(route, Mount) and context.path == route.path:
                self._patterns.append((route.path_regex, route.path_format))
            elif context.path is not None:
                pattern, template, parameters = compile_path(context.path)
                parent, _, last = template.rpartition("/")
                if not parameters:
                    self._exact.setdefault(template, template)
                elif (
                    len(parameters) == 1
                    and last == "{" + next(iter(parameters)) + "}"
                    and isinstance(next(iter(parameters.values())), StringConvertor)
                    and "{" not in parent
                ):
                    self._last_segment.setdefault(parent, template)
                elif (pattern, template) not in self._patterns:
                    self._patterns.append((pattern, template))

    def __call__(self, path: str) -> str:
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"  # as the edge serves it
        template = self._exact.get(path)
        if template is not None:
            return template
        parent, _, last = path.rpartition("/")
        if last:
            template = self._last_segment.get(parent)
            if template is not None:
                return template
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return UNMATCHED_ROUTE


class Recorder:
    """What the access layer records, to the access log and the metrics; written out
    whenever the worker has no request in flight (so a client that has its response
    finds it in the log and in any worker's scrape), and every second under load
    (`flush`, from the lifespan)."""

    __slots__ = ("in_flight", "log", "metrics")

    def __init__(self, log: AccessLog | None, metrics: Metrics | None) -> None:
        self.log = log
        self.metrics = metrics
        self.in_flight = 0

    def finish(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        user_id: str | None,
        rid: str | None = None,
    ) -> None:
        """One request, recorded; `rid`: its id if not the one the edge set."""
        self.in_flight -= 1
        if self.log is not None:
            self.log.add(rid or request_id(), method, route, status, seconds, user_id)
        if self.metrics is not None:
            self.metrics.record(
                route, method if method in _METHODS else OTHER_METHOD, status, seconds
            )
        if not self.in_flight:
            self.flush()

    def flush(self) -> None:
        if self.log is not None:
            self.log.flush()
        if self.metrics is not None:
            try:
                self.metrics.flush()
            except Exception:  # a full disk, say: lose counts, never requests
                logger.exception("metrics: writing the counts failed")


class AccessMiddleware:
    """Times each HTTP request from its arrival to its response's last body message and
    records it just before that message is passed on.

    Per request it adds one closure and no coroutine: the send it hands on is a plain
    function returning the server's own awaitable (an `async def` wrapper would cost a
    coroutine per message)."""

    def __init__(self, app: ASGIApp, recorder: Recorder, routes: RouteTemplates) -> None:
        self.app = app
        self.recorder = recorder
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = scope[EXCHANGE_KEY] = Exchange(perf_counter())
        self.recorder.in_flight += 1

        def send_recorded(message: Message) -> Awaitable[None]:
            kind = message["type"]
            if kind == "http.response.start":
                exchange.status = message["status"]
            elif kind == "http.response.body" and not message.get("more_body"):
                self._finish(scope, exchange)
            return send(message)

        try:
            await self.app(scope, receive, send_recorded)
        finally:
            self._finish(scope, exchange)

    def _finish(self, scope: Scope, exchange: Exchange) -> None:
        """Record the request, once."""
        if exchange.done:
            return
        exchange.done = True
        status, rid = exchange.server_answer or (exchange.status, None)
        self.recorder.finish(
            self.routes(scope["path"]),
            scope["method"],
            status,
            perf_counter() - exchange.started,
            exchange.user_id,
            rid,
        )
