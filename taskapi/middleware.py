"""The edge: one pure ASGI middleware for what every request needs before routing."""

from __future__ import annotations

import re
from random import getrandbits

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskapi.errors import APIError, api_error_response, error_response, exception_response
from taskapi.requestctx import CHARGE_KEY, RESPONSE_HEADERS_KEY, Charge, set_request_id

_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_HEADER_BYTES = 16_384
"""Request headers: names and values together."""
MAX_URL_BYTES = 8_192
"""The request target: path and query."""

# On every answer, the API's and the HTML documentation's.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# The API answers JSON only: nothing in it may load, run or be framed.
API_HEADERS = [
    *SECURITY_HEADERS,
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
# Only over HTTPS (RFC 6797): TLS at uvicorn, or a trusted proxy's X-Forwarded-Proto, which
# uvicorn (--proxy-headers, --forwarded-allow-ips) turns into the scope's scheme.
HSTS = (b"strict-transport-security", b"max-age=31536000")


def new_request_id() -> str:
    """32 hex digits as uuid4().hex, without its system call (ids need not be secret)."""
    return f"{getrandbits(128):032x}"


# Never charged: liveness probes (a load balancer's, every few seconds), successful metrics
# scrapes (only with METRICS_TOKEN: a refused one is charged) and successful CORS preflights
# (a browser sends one per URL it writes to); none costs database work.
_UNCHARGED_PATHS = frozenset({"/health", "/metrics"})


async def _refusal(scope: Scope, status: int) -> APIError | None:
    """Charge a request that was not charged (it never reached authentication) to its
    client address; the 429 to answer instead if the address is over its limit."""
    if status < 400 and (scope["path"] in _UNCHARGED_PATHS or scope["method"] == "OPTIONS"):
        return None
    services = getattr(scope.get("app"), "services", None)
    if services is None:
        return None
    client = scope.get("client")
    refusal: APIError | None = await services.authenticator.charge_address(
        client[0] if client else "unknown"
    )
    return refusal


async def _send_error(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    detail: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """Answer before the app runs, with the service's one error body (or the 429 its
    address earned)."""
    refusal = await _refusal(scope, status)
    if refusal is not None:
        response = api_error_response(refusal)
    else:
        response = error_response(status, code, detail)
    response.headers["Connection"] = "close"
    response.raw_headers.extend(extra)
    await response(scope, receive, send)


class EdgeMiddleware:
    """Request id, trailing-slash folding, size bounds and security headers.

    - `/api/v1/tasks/` is served as `/api/v1/tasks` directly: no 307, which would make
      clients drop the Authorization header.
    - Bodies over `max_body_bytes` are refused with 413 while they stream in; the app
      then reads the buffered body, so nothing unbounded is ever held.
    - Every answer gets `API_HEADERS` (HSTS too over HTTPS), except that the HTML pages in
      `html_paths` set their own Content-Security-Policy.

    The request line and headers reach the app only once the server has read them whole:
    these bounds (414, 431) hold under any server; the service's HTTP protocol
    (`taskapi.server`) also stops reading a request head at 32 KiB.
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, html_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.html_paths = html_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id: bytes | None = None
        content_length: bytes | None = None
        total = 0
        for name, value in scope["headers"]:
            total += len(name) + len(value)
            if name == b"x-request-id" and _SAFE_REQUEST_ID.match(value):
                request_id = value
            elif name == b"content-length":
                content_length = value
        rid = request_id.decode() if request_id else new_request_id()
        set_request_id(rid)
        tail = [(b"x-request-id", rid.encode())]
        if scope.get("scheme") == "https":
            tail.insert(0, HSTS)
        path: str = scope["path"]
        query: bytes = scope.get("query_string", b"")
        target = len(scope.get("raw_path") or path) + (len(query) + 1 if query else 0)
        if target > MAX_URL_BYTES or total > MAX_HEADER_BYTES:
            status, code, detail = (
                (414, "URI_TOO_LONG", "Request URL is too long")
                if target > MAX_URL_BYTES
                else (431, "HEADERS_TOO_LARGE", "Request headers are too large")
            )
            await _send_error(scope, receive, send, status, code, detail, [*API_HEADERS, *tail])
            return

        if len(path) > 1 and path.endswith("/"):
            scope = dict(scope)
            scope["path"] = path = path.rstrip("/") or "/"
            scope["raw_path"] = path.encode()
        extra = [*(SECURITY_HEADERS if path in self.html_paths else API_HEADERS), *tail]
        if scope["method"] == "HEAD":
            # HEAD is GET without the body (RFC 9110 9.3.2), wherever GET is answered.
            scope = dict(scope)
            scope["method"] = "GET"
            send = _without_body(send)

        if scope["method"] in _BODY_METHODS:
            declared = 0
            if content_length is not None:
                try:
                    declared = int(content_length)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await _send_error(
                        scope, receive, send, 400, "BAD_REQUEST", "Invalid Content-Length", extra
                    )
                    return
            # Refused at once by its declared length, or as soon as it streams past the limit.
            replay = None
            if declared <= self.max_body_bytes:
                replay = await self._read_bounded(receive)
            if replay is None:
                too_large = f"Request body exceeds {self.max_body_bytes} bytes"
                await _send_error(scope, receive, send, 413, "PAYLOAD_TOO_LARGE", too_large, extra)
                return
            receive = replay

        # The app may add headers here (rate limits), whatever response it returns.
        app_headers: list[tuple[bytes, bytes]] = []
        scope[RESPONSE_HEADERS_KEY] = app_headers
        charge = scope[CHARGE_KEY] = Charge()

        started = False
        refused = False

        # `send_with_headers` must not refer to itself: a closure that does is a reference
        # cycle holding the whole request (scope, protocol cycle, FastAPI's exit stacks) until
        # the cyclic GC runs, which then spent ~80 ms at a time freeing ~50k objects (p99 of
        # every route ~110 ms instead of ~12 ms under load). The 429 goes through
        # `_with_headers` on the server's own `send`.
        async def send_with_headers(message: Message) -> None:
            nonlocal started, refused
            if message["type"] == "http.response.start":
                started = True
                if not charge.done:
                    charge.done = True
                    refusal = await _refusal(scope, message["status"])
                    if refusal is not None:  # over its address's limit: the 429 instead
                        refused = True  # and the app's own body is dropped
                        await api_error_response(refusal)(
                            scope, receive, _with_headers(send, extra, app_headers)
                        )
                        return
                message["headers"] = [*message.get("headers", ()), *extra, *app_headers]
            elif refused:
                return
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as error:
            # FastAPI renders its own errors; this is for a failure outside it.
            if not started:
                response = exception_response(error)
                await response(scope, receive, send_with_headers)
            raise

    async def _read_bounded(self, receive: Receive) -> Receive | None:
        """Read the body up to the limit; None if it is larger. Returns a replaying receive."""
        chunks: list[bytes] = []
        size = 0
        disconnect: Message | None = None
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnect = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if disconnect is not None:
            return replaying(disconnect, receive)
        body = b"".join(chunks)
        return replaying({"type": "http.request", "body": body, "more_body": False}, receive)


def _with_headers(
    send: Send, extra: list[tuple[bytes, bytes]], app_headers: list[tuple[bytes, bytes]]
) -> Send:
    """A send that adds the edge's headers to the response's start."""

    async def send_headed(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *extra, *app_headers]
        await send(message)

    return send_headed


def _without_body(send: Send) -> Send:
    """A send that passes the response's start (its headers, `Content-Length` included) and
    drops the body."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if not message.get("more_body", False):
                await send({"type": "http.response.body", "body": b""})
            return
        await send(message)

    return send_head


def replaying(message: Message, receive: Receive) -> Receive:
    """A receive that hands out `message` (already read), then reads on."""
    pending = [message]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
