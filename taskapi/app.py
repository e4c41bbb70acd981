"""The application factory: settings in, a wired FastAPI app out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TextIO

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from taskapi import __version__
from taskapi.access import AccessMiddleware, Recorder, RouteTemplates
from taskapi.auth.dependencies import Authenticator
from taskapi.auth.jwks import JWKSCache
from taskapi.auth.tokens import TokenVerifier
from taskapi.config import Settings, load_settings
from taskapi.db import Database, open_database
from taskapi.docs import HTML_PAGES, install_docs
from taskapi.errors import error_response, install_error_handlers
from taskapi.events import NO_EVENTS, Events
from taskapi.health import router as health_router
from taskapi.labels.router import router as labels_router
from taskapi.lists.router import router as lists_router
from taskapi.logs import AccessLog, access_log_enabled, configure_logging
from taskapi.me.router import router as me_router
from taskapi.metrics import Metrics, MetricsServer, metrics_router
from taskapi.middleware import EdgeMiddleware
from taskapi.ratelimit import RateLimits, build_rate_limits
from taskapi.requestctx import RESPONSE_HEADERS_KEY
from taskapi.services import Services
from taskapi.tasks.fastpath import TasksFastPath
from taskapi.tasks.maintenance import purge_forever
from taskapi.tasks.operations import SyncPolicy
from taskapi.tasks.router import router as tasks_router
from taskapi.users.service import UserProvisioner

logger = logging.getLogger("taskapi")

DESCRIPTION = (
    "Per-user task management behind Better Auth tokens. Every error body is "
    '`{"detail": "...", "code": "..."}`; see the README for the codes.'
)
EXPOSED_HEADERS = [
    "Location",
    "Link",
    "Retry-After",
    "X-Request-ID",
    "RateLimit",
    "RateLimit-Policy",
    "ETag",
    "Idempotent-Replayed",
]


class JSONErrorCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight in the service's `{detail, code}` form.

    A request without `Origin` (not from a browser, or same-origin) only needs
    `Vary: Origin`, which goes to the edge's response headers instead of through
    Starlette's per-request header parsing.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = scope.get(RESPONSE_HEADERS_KEY)
        if extra is not None and not any(name == b"origin" for name, _ in scope["headers"]):
            extra.append((b"vary", b"Origin"))
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        kept = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-type", "content-length")
        }
        detail = bytes(response.body).decode() or "CORS preflight refused"
        return error_response(response.status_code, "CORS_REJECTED", detail, kept)


# With CPython's default thresholds, cyclic-GC pauses stretch the p99 under load to several
# times the median; moving what start-up allocated out of the collector's sight and
# collecting the young generation less often shortens them (docs/design.md, "Tail latency").
GC_GEN0_THRESHOLD = 50_000


def _tune_garbage_collector() -> None:
    """Freeze start-up objects (modules, routes, schemas) and collect less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gc.get_threshold()[0]), gen1, gen2)


RECORDS_FLUSH_SECONDS = 1.0


async def _flush_every_second(recorder: Recorder | None, metrics: Metrics | None) -> None:
    """Under continuous load a worker is never idle: write its records out anyway."""
    while True:
        await asyncio.sleep(RECORDS_FLUSH_SECONDS)
        if recorder is not None:
            recorder.flush()
        if metrics is not None:
            metrics.sample()


def _lifespan(settings: Settings, recorder: Recorder | None, metrics: Metrics | None) -> Any:
    events: Events = metrics if metrics is not None else NO_EVENTS

    @asynccontextmanager
    async def lifespan(app: ServiceApp) -> AsyncIterator[None]:
        database: Database = await open_database(settings)
        jwks: JWKSCache | None = None
        limits: RateLimits | None = None
        purger: asyncio.Task[None] | None = None
        metrics_server: MetricsServer | None = None
        flusher: asyncio.Task[None] | None = None
        sync = SyncPolicy(
            idempotency_ttl=timedelta(hours=settings.idempotency_ttl_hours),
            tombstone_retention=timedelta(days=settings.tombstone_retention_days),
            events=events,
        )
        try:
            if metrics is not None:
                metrics.watch(database)
                if settings.metrics_port is not None:
                    metrics_server = MetricsServer(
                        metrics,
                        settings.metrics_host,
                        settings.metrics_port,
                        settings.metrics_token,
                    )
                    await metrics_server.start()
            if recorder is not None or metrics is not None:
                flusher = asyncio.create_task(_flush_every_second(recorder, metrics))
            if settings.jwks_url:
                jwks = JWKSCache(
                    settings.jwks_url,
                    ttl=settings.jwks_cache_seconds,
                    refetch_cooldown=settings.jwks_refetch_cooldown_seconds,
                    fetch_timeout=settings.jwks_fetch_timeout_seconds,
                    events=events,
                )
                await jwks.start()
            limits = build_rate_limits(
                settings.rate_limit_enabled,
                settings.rate_limit_per_minute,
                settings.rate_limit_burst,
                settings.rate_limit_anonymous_per_minute,
                settings.redis_url,
                events,
            )
            app.services = Services(
                settings=settings,
                db=database,
                authenticator=Authenticator(
                    TokenVerifier(settings, jwks),
                    limits,
                    UserProvisioner(settings.user_cache_size),
                ),
                sync=sync,
            )
            purger = asyncio.create_task(
                purge_forever(database, sync, settings.purge_interval_seconds)
            )
            app.state.engine = database.engine  # SQLAlchemy, for admin tasks and tests
            app.state.jwks = jwks
            _tune_garbage_collector()
            yield
        finally:
            if purger is not None:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger
            app.services = None
            if flusher is not None:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
            if metrics_server is not None:
                await metrics_server.close()
            if recorder is not None:
                recorder.flush()
            if metrics is not None:
                metrics.close()
            if limits is not None:
                await limits.aclose()
            if jwks is not None:
                await jwks.aclose()
            await database.close()

    return lifespan


class ServiceApp(FastAPI):
    """FastAPI, inside the service's own pure ASGI layers rather than around them.

    Every request passes the access layer (when the access log or metrics are on), the
    edge (request id, size bounds, security headers) and CORS, then the tasks fast path;
    only what the fast path does not take enters FastAPI's stack (error middleware,
    routing, dependency injection), so a fast-path request runs no framework code at all.
    Errors FastAPI renders still leave through the edge.
    """

    services: Services | None
    """The running service's parts (`taskapi.services`), set for the length of the lifespan."""

    settings: Settings
    """The settings the app was built with (the HTTP protocol reads its timeouts here)."""

    def __init__(
        self,
        *,
        settings: Settings,
        outer_layers: Callable[[ServiceApp, ASGIApp], ASGIApp],
        **kwargs: Any,
    ) -> None:
        self.settings = settings
        self._outer_layers = outer_layers
        self.services = None
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return self._outer_layers(self, super().build_middleware_stack())


def _install_openapi(app: FastAPI) -> None:
    """Declare the bearer scheme and require it on every task operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            for path, operations in schema["paths"].items():
                if path.startswith("/api/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearerAuth": []}]
            _link_created_tasks(schema)
            _link_created_lists(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _link_created_tasks(schema: dict[str, Any]) -> None:
    """OpenAPI links from a created task to what can be done with it, so clients (and
    schemathesis' stateful tests) follow `id` and `ETag` from POST to GET/PUT/PATCH/DELETE."""
    paths = schema["paths"]
    task = paths.get("/api/v1/tasks/{task_id}", {})
    created = paths.get("/api/v1/tasks", {}).get("post", {}).get("responses", {}).get("201")
    if created is None:
        return
    links: dict[str, Any] = {}
    for method, operation in task.items():
        parameters: dict[str, str] = {"task_id": "$response.body#/id"}
        if method in ("put", "patch", "delete"):
            parameters["header.if-match"] = "$response.header.ETag"
        links[f"{method.capitalize()}CreatedTask"] = {
            "operationId": operation["operationId"],
            "parameters": parameters,
        }
    created["links"] = links


def _link_created_lists(schema: dict[str, Any]) -> None:
    """OpenAPI links from a created list to what can be done with it and its tasks (its
    GET/PATCH/DELETE, a task created into it, its page of tasks), so clients and
    schemathesis' stateful tests follow its `id`."""
    paths = schema["paths"]
    created = paths.get("/api/v1/lists", {}).get("post", {}).get("responses", {}).get("201")
    if created is None:
        return
    links: dict[str, Any] = {}
    for method, operation in paths.get("/api/v1/lists/{list_id}", {}).items():
        links[f"{method.capitalize()}CreatedList"] = {
            "operationId": operation["operationId"],
            "parameters": {"list_id": "$response.body#/id"},
        }
    tasks = paths.get("/api/v1/tasks", {})
    if "post" in tasks:
        links["CreateTaskInList"] = {
            "operationId": tasks["post"]["operationId"],
            "requestBody": {"list_id": "$response.body#/id"},
            "description": "A task created into the list (merged into the request's body)",
        }
    if "get" in tasks:
        links["ListTasksOfList"] = {
            "operationId": tasks["get"]["operationId"],
            "parameters": {"query.list_id": "$response.body#/id"},
        }
    created["links"] = links


def _outer_layers(
    settings: Settings, recorder: Recorder | None
) -> Callable[[ServiceApp, ASGIApp], ASGIApp]:
    """The service's own layers around FastAPI, outermost last."""

    def wrap(app: ServiceApp, framework: ASGIApp) -> ASGIApp:
        layers: ASGIApp = framework
        if settings.tasks_fast_path and not settings.telemetry_enabled:
            layers = TasksFastPath(layers)
        layers = JSONErrorCORSMiddleware(
            layers,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Request-ID",
                "If-Match",
                "If-None-Match",
                "Idempotency-Key",
            ],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
        layers = EdgeMiddleware(
            layers,
            max_body_bytes=settings.max_body_bytes,
            html_paths=HTML_PAGES,
        )
        if recorder is not None:
            layers = AccessMiddleware(layers, recorder, RouteTemplates(app.routes))
        return layers

    return wrap


def create_app(settings: Settings | None = None, log_stream: TextIO | None = None) -> ServiceApp:
    """Build the service; settings default to the environment and `.env`, log lines go to
    standard error unless `log_stream` is given."""
    settings = settings or load_settings()
    settings.require_verification_key()
    log_handler = configure_logging(settings, log_stream)
    metrics = Metrics.from_settings(settings) if settings.metrics_enabled else None
    access_log = (
        AccessLog(log_handler, settings.resolved_log_format)
        if access_log_enabled(settings)
        else None
    )
    recorder = Recorder(access_log, metrics) if access_log or metrics else None
    app = ServiceApp(
        settings=settings,
        outer_layers=_outer_layers(settings, recorder),
        title="Task Management API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(settings, recorder, metrics),
        # FastAPI's pages load their assets from a CDN: taskapi.docs serves its own instead.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        redirect_slashes=False,
        strict_content_type=False,  # a body without Content-Type is read as JSON
        telemetry={
            "tracing": settings.telemetry_enabled,
            "metrics": settings.telemetry_enabled,
            "logs": settings.telemetry_enabled,
        },
    )
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(tasks_router)
    app.include_router(lists_router)
    app.include_router(me_router)
    app.include_router(labels_router)
    install_docs(app)
    if metrics is not None and settings.metrics_port is None:
        app.include_router(metrics_router(metrics, settings.metrics_token))
    _install_openapi(app)
    return app
