"""Prometheus metrics (prometheus-client): requests, latency, the database pool, rate-limit
refusals, JWKS fetches, idempotency replays and the change feed's answers, served at
`GET /metrics` behind `METRICS_TOKEN` or on `METRICS_PORT`.

Correct under several worker processes in prometheus-client's multiprocess mode: with
`PROMETHEUS_MULTIPROC_DIR` set, each worker writes its values to files there and a scrape,
whichever worker answers it, sums them all.

A request costs a few dictionary and integer operations (`record`, and for a replay or a
feed request its event): its counts are held in the worker and added to prometheus-client's
values by `flush`, which the access layer calls whenever the worker has no request in
flight, and every second, and a scrape calls first. A value written in multiprocess mode
costs a lock, a `getpid` system call and a write to a memory map, three per request if
written at once; under load one flush carries many requests. A scrape therefore sees every
request a worker finished while idle, and under load each worker's counts of at most the
last second ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hmac
import logging
import multiprocessing
import os
from bisect import bisect_left
from collections.abc import Sequence

import orjson
from fastapi import APIRouter, Request
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from pydantic import SecretStr
from starlette.responses import Response

from taskapi.config import ConfigError, Settings
from taskapi.db import Database
from taskapi.errors import InvalidTokenError, MissingTokenError
from taskapi.events import FEED_OUTCOMES, FeedOutcome, JWKSOutcome

logger = logging.getLogger("taskapi.metrics")

# Seconds; a GET is a few milliseconds under load, a request past the pool's timeout 5 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _AddableHistogram(Histogram):
    """A histogram that takes many observations at once: one write per bucket touched,
    rather than two per observation."""

    def add(self, total: float, counts: Sequence[int]) -> None:
        """Observations summing to `total`, `counts[i]` of them in bucket `i`."""
        self._sum.inc(total)
        for bucket, count in zip(self._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


class _Held:
    """The requests of one (route, method, status) not yet flushed."""

    __slots__ = ("buckets", "count", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: +Inf


def _multiprocess_dir(settings: Settings) -> str | None:
    """The directory of multiprocess mode, checked; None for a single process."""
    configured = settings.prometheus_multiproc_dir
    environment = os.environ.get(MULTIPROC_ENV) or None
    if configured is not None and configured != environment:
        raise ConfigError(
            f"{MULTIPROC_ENV} is set in .env only: prometheus-client reads it from the process "
            "environment when it is imported, so export it (e.g. in the service's unit or "
            "container environment) instead."
        )
    if environment is None:
        if multiprocessing.parent_process() is not None:
            logger.warning(
                "METRICS_ENABLED without %s in a process started by another (uvicorn "
                "--workers or --reload): with several workers, each reports only its own "
                "requests; set %s to a directory the workers share",
                MULTIPROC_ENV,
                MULTIPROC_ENV,
            )
        return None
    if not os.path.isdir(environment):
        raise ConfigError(
            f"{MULTIPROC_ENV}={environment} is not a directory: create it, empty, before "
            "starting the service"
        )
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise ConfigError(
            f"{MULTIPROC_ENV} was set after prometheus-client was imported: set it in the "
            "environment the service starts with"
        )
    return environment


def _forget_dead_workers(directory: str) -> None:
    """Drop the gauges of workers that are gone (killed, say, before they could)."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid_text = os.path.basename(path).rsplit("_", 1)[1].removesuffix(".db")
        if not pid_text.isdigit():
            continue  # not a worker's file
        pid = int(pid_text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, someone else's


class Metrics:
    """The service's metrics, and the `taskapi.events.Events` they count.

    Each app has its own (a registry of its own in a single process), so several apps in
    one process (the tests) do not mix their counts.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None:
            _forget_dead_workers(multiprocess_dir)
        # In multiprocess mode the values live in files and a scrape reads those.
        self.registry: CollectorRegistry | None = (
            None if multiprocess_dir is not None else CollectorRegistry()
        )
        registry = self.registry
        self._requests = Counter(
            "taskapi_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self._latency = _AddableHistogram(
            "taskapi_http_request_duration_seconds",
            "Time from a request's arrival to its response's last byte handed to the server.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._rate_limited = Counter(
            "taskapi_rate_limit_refusals",
            "Requests refused with 429 by a rate limit, by policy (user or anonymous).",
            ["policy"],
            registry=registry,
        )
        self._jwks_fetches = Counter(
            "taskapi_jwks_fetches",
            "Fetches of the JWKS (Better Auth's keys), by outcome (success or failure).",
            ["outcome"],
            registry=registry,
        )
        self._replays = Counter(
            "taskapi_idempotency_replays",
            "Creates answered with an Idempotency-Key's stored answer (Idempotent-Replayed).",
            registry=registry,
        )
        feed = Counter(
            "taskapi_feed_requests",
            "Change-feed requests by outcome: full (no sync token), changes, unchanged "
            "(nothing new since the token), expired (410).",
            ["outcome"],
            registry=registry,
        )
        for policy in ("user", "anonymous"):
            self._rate_limited.labels(policy)
        for outcome in ("success", "failure"):
            self._jwks_fetches.labels(outcome)
        self._feed = {outcome: feed.labels(outcome) for outcome in FEED_OUTCOMES}
        # Events as frequent as requests, held until `flush` as requests are.
        self._held_replays = 0
        self._held_feed: dict[FeedOutcome, int] = {}
        self._pool: tuple[Gauge, Gauge, Gauge, Gauge] | None = None
        self._database: Database | None = None
        self._held: dict[tuple[str, str, int], _Held] = {}
        self._children: dict[tuple[str, str, int], tuple[Counter, _AddableHistogram]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Metrics:
        return cls(_multiprocess_dir(settings))

    # --- requests (the access layer) ------------------------------------------------------

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request, held until `flush`."""
        key = (route, method, status)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held()
        held.count += 1
        held.seconds += seconds
        held.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def flush(self) -> None:
        """Add the requests and events held to prometheus-client's values (the files, with
        several workers)."""
        if self._held_replays:
            replays, self._held_replays = self._held_replays, 0
            self._replays.inc(replays)
        if self._held_feed:
            feed, self._held_feed = self._held_feed, {}
            for outcome, count in feed.items():
                self._feed[outcome].inc(count)
        if not self._held:
            return
        held, self._held = self._held, {}
        children = self._children
        for key, requests in held.items():
            pair = children.get(key)
            if pair is None:
                route, method, status = key
                pair = children[key] = (
                    self._requests.labels(route, method, str(status)),
                    self._latency.labels(route, method),
                )
            pair[0].inc(requests.count)
            pair[1].add(requests.seconds, requests.buckets)

    # --- events (`taskapi.events.Events`) -------------------------------------------------

    def rate_limited(self, policy: str) -> None:
        self._rate_limited.labels(policy).inc()

    def jwks_fetched(self, outcome: JWKSOutcome) -> None:
        self._jwks_fetches.labels(outcome).inc()

    def idempotency_replayed(self) -> None:
        self._held_replays += 1

    def feed_requested(self, outcome: FeedOutcome) -> None:
        held = self._held_feed
        held[outcome] = held.get(outcome, 0) + 1

    # --- the database pool ----------------------------------------------------------------

    def watch(self, database: Database) -> None:
        """Report `database`'s pool (if it has one of its own) from now on."""
        self._database = database
        self.sample()

    def sample(self) -> None:
        """Set the pool's gauges to its state now (every second, and before a scrape)."""
        database = self._database
        usage = database.pool_usage() if database is not None else None
        if usage is None:
            return
        if self._pool is None:
            self._pool = self._pool_gauges()
        for gauge, value in zip(self._pool, usage, strict=True):
            gauge.set(value)

    def _pool_gauges(self) -> tuple[Gauge, Gauge, Gauge, Gauge]:
        """Created once the pool is known, so a backend without one shows no false zeros.
        Several workers: the sum over the live ones."""

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=self.registry, multiprocess_mode="livesum")

        return (
            gauge(
                "taskapi_db_pool_connections_in_use",
                "Database connections handed to requests (or being opened for one).",
            ),
            gauge("taskapi_db_pool_waiting_requests", "Requests waiting for a connection."),
            gauge("taskapi_db_pool_connections_open", "Database connections open."),
            gauge(
                "taskapi_db_pool_size",
                "The most connections the pools open (DB_POOL_SIZE, or the adaptive size).",
            ),
        )

    # --- exposition -----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (version 0.0.4)."""
        self.flush()
        self.sample()
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """At the worker's end: write what is held; with several workers, withdraw this
        worker's gauges (its counts stay in the sums)."""
        self.flush()
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def check_bearer(authorization: str | None, token: SecretStr | None) -> None:
    """Nothing if `token` is None or `authorization` is `Bearer <token>`; else the 401."""
    if token is None:
        return
    if authorization is None:
        raise MissingTokenError()
    scheme, _, presented = authorization.partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        raise InvalidTokenError()


def metrics_router(metrics: Metrics, token: SecretStr | None) -> APIRouter:
    """`GET /metrics` on the service's port (not in the OpenAPI document)."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        check_bearer(request.headers.get("authorization"), token)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return router


MAX_REQUEST_HEAD_BYTES = 16_384
REQUEST_TIMEOUT_SECONDS = 10.0


class MetricsServer:
    """`GET /metrics` alone on its own port (METRICS_HOST:METRICS_PORT), one request per
    connection. Each worker listens on the port (SO_REUSEPORT) and any of them answers a
    scrape with the sum of all."""

    def __init__(self, metrics: Metrics, host: str, port: int, token: SecretStr | None) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._token = token
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            self._host,
            self._port,
            reuse_port=True,
            limit=MAX_REQUEST_HEAD_BYTES,
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers, body = self._answer(head)
                writer.write(_response(status, headers, body))
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, was too slow, or sent too much: just close
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[int, dict[str, str], bytes]:
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        if path.rstrip("/") != "/metrics":
            return _error(404, "NOT_FOUND", "Not found")
        if method != "GET":
            return _error(405, "METHOD_NOT_ALLOWED", "Method not allowed", {"Allow": "GET"})
        authorization = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization":
                authorization = value.strip()
                break
        try:
            check_bearer(authorization, self._token)
        except (MissingTokenError, InvalidTokenError) as error:
            return _error(error.status_code, error.code, error.detail, error.headers)
        return 200, {"Content-Type": CONTENT_TYPE}, self._metrics.exposition()


def _error(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    body = orjson.dumps({"detail": detail, "code": code})
    return status, {"Content-Type": "application/json", **(headers or {})}, body


_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}


def _response(status: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
