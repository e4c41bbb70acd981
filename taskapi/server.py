"""The service's HTTP/1.1 protocol for uvicorn: `--http taskapi.server:HttpToolsProtocol`.

uvicorn's httptools protocol with what a server facing clients it does not control needs and
uvicorn has no setting for:

- **Deadlines.** A request's headers must be complete `HEADER_TIMEOUT_SECONDS` after the
  connection opens (on a kept-alive connection: after the request's first byte), and its
  whole body `BODY_TIMEOUT_SECONDS` after its headers; otherwise the connection is closed,
  with `408 REQUEST_TIMEOUT` if the client had sent anything. (Idle kept-alive connections
  are uvicorn's: `--timeout-keep-alive`, 5 s.) While the server itself has paused reading
  (the app has not read the body yet, pipelined requests wait), the client is not late.
- **A bound while the head arrives.** A request head (request line and headers, as sent) is
  never read past 32 KiB: 431, or 414 when the request target alone is over 8 KiB. httptools
  itself would buffer a header of any size before handing it over. Within that bound the
  edge middleware refuses a target over 8 KiB (414) and headers over 16 KiB of names and
  values (431), as it does under any server.
- **Errors in the service's form.** What uvicorn answers with a plain-text 400 (malformed
  HTTP) is `400 {"detail", "code": "BAD_REQUEST"}` with the headers of every answer.
- **One write per response.** uvicorn writes a response's head when the app starts it and
  its body when the app sends it: two system calls and, with `TCP_NODELAY`, two TCP segments
  for every answer, and two reads for the client. Here the head waits for the first body
  message and goes out with it (`ResponseCycle`): one of each, the same bytes.

One timer per connection, re-armed when it fires rather than per request: a request costs a
few attribute writes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState

from taskapi.app import ServiceApp
from taskapi.config import Settings
from taskapi.errors import error_response
from taskapi.middleware import API_HEADERS, HSTS, MAX_URL_BYTES, new_request_id
from taskapi.requestctx import answered_by_server

logger = logging.getLogger("taskapi.server")

MAX_REQUEST_HEAD_BYTES = 32_768
"""Bytes of one request head (request line and headers, as sent) the server reads at most."""
_HEADERS_TOO_LARGE = "Request headers are too large"


def _timeouts(config: Config) -> tuple[float, float]:
    """HEADER_TIMEOUT_SECONDS and BODY_TIMEOUT_SECONDS of the app uvicorn serves (inside
    uvicorn's own wrappers), or their defaults for another app."""
    app: Any = config.loaded_app
    for _ in range(8):
        if isinstance(app, ServiceApp):
            return app.settings.header_timeout_seconds, app.settings.body_timeout_seconds
        app = getattr(app, "app", None)
    fields = Settings.model_fields
    return (
        float(fields["header_timeout_seconds"].default),
        float(fields["body_timeout_seconds"].default),
    )


class HttpToolsProtocol(_HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, bounds on the request head while it
    arrives, and errors in the service's `{detail, code}` form (see the module's doc)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout, self.body_timeout = _timeouts(config)
        self._check_every = min(self.header_timeout, self.body_timeout)
        self._watchdog: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # None: not waiting on the client
        self._waiting_for_body = False
        self._seen = False  # whether the client sent anything
        self._head_open = True  # between requests, or inside a request's head
        self._head_bytes = 0
        self._messages = 0  # requests parsed whole

    # --- connection ------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # uvicorn builds each request's cycle itself (`on_headers_complete`); its class, not
        # its state, changes here, before the app gets its `send`.
        cycle.__class__ = ResponseCycle
        super()._start_asgi_task(cycle, app)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        now = self.loop.time()
        self._deadline = now + self.header_timeout
        # The first look within the shorter timeout: a body deadline set before the head's
        # would otherwise wait for it (a 1 s body timeout enforced at the 10 s head timeout).
        self._watchdog = self.loop.call_at(now + self._check_every, self._on_watchdog)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watchdog()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._stop_watchdog()  # the connection is the WebSocket protocol's from now on
        super().handle_websocket_upgrade()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def data_received(self, data: bytes) -> None:
        self._seen = True
        messages = self._messages
        _HttpToolsProtocol.data_received(self, data)
        if self._head_open and not self.transport.is_closing():
            # A head that began inside this read (after a pipelined request) counts from
            # the next read on: at most one read more than the bound is ever held.
            if messages == self._messages:
                self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
                self._refuse(*self._head_refusal(431, "HEADERS_TOO_LARGE", _HEADERS_TOO_LARGE))

    # --- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        _HttpToolsProtocol.on_message_begin(self)
        if self._deadline is None:  # the first request's deadline runs from the connection
            self._deadline = self.loop.time() + self.header_timeout
            self._waiting_for_body = False

    def on_headers_complete(self) -> None:
        _HttpToolsProtocol.on_headers_complete(self)
        self._head_open = False
        self._head_bytes = 0
        self._deadline = self.loop.time() + self.body_timeout
        self._waiting_for_body = True

    def on_message_complete(self) -> None:
        _HttpToolsProtocol.on_message_complete(self)
        self._messages += 1
        self._head_open = True
        self._deadline = None

    # --- deadlines -----------------------------------------------------------------------

    def _on_watchdog(self) -> None:
        """Close a connection past its deadline; else look again at the deadline, or within
        the shorter timeout (a deadline set meanwhile is never earlier than that)."""
        self._watchdog = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            if not self.flow.read_paused:
                self._expire()
                return
            # The server is not reading (the app has not read the body yet, or pipelined
            # requests wait): the client is not late. It gets a full timeout once reading
            # resumes, which a later look sees as a new deadline.
            deadline = self._deadline = now + (
                self.body_timeout if self._waiting_for_body else self.header_timeout
            )
        next_look = now + self._check_every
        if deadline is not None and deadline < next_look:
            next_look = deadline
        self._watchdog = self.loop.call_at(next_look, self._on_watchdog)

    def _expire(self) -> None:
        if self._waiting_for_body:
            logger.debug("request body not complete after %.1f s: closing", self.body_timeout)
            self._refuse(408, "REQUEST_TIMEOUT", "The request body was not received in time")
        elif self._seen:
            logger.debug("request headers not complete after %.1f s: closing", self.header_timeout)
            self._refuse(408, "REQUEST_TIMEOUT", "The request headers were not received in time")
        else:
            self._close()  # nothing was asked: nothing to answer

    # --- refusals ------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what httptools cannot parse, in the service's form."""
        self._refuse(*self._head_refusal(400, "BAD_REQUEST", "Invalid HTTP request"))

    def _head_refusal(self, status: int, code: str, detail: str) -> tuple[int, str, str]:
        """A request target over the bound is the reason, whatever else is wrong."""
        if len(getattr(self, "url", b"")) > MAX_URL_BYTES:  # uvicorn sets it per request
            return 414, "URI_TOO_LONG", "Request URL is too long"
        return status, code, detail

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer `status` (when no other answer is due on this connection) and close.

        A refused head belongs to a request not yet handed to the app: it is answered only if
        every earlier request on the connection is. A refused body belongs to the current
        request: it is answered if the app has not started its own answer, and the access
        log and metrics record that answer rather than the app's.
        """
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._head_open:
            answer = cycle is None or cycle.response_complete
        else:
            answer = cycle is not None and not cycle.response_started
        if answer:
            request_id = new_request_id()
            self._write_error(status, code, detail, request_id)
            if cycle is not None and not self._head_open:
                answered_by_server(cycle.scope, status, request_id)
        self._close()

    def _write_error(self, status: int, code: str, detail: str, request_id: str) -> None:
        response = error_response(status, code, detail)
        headers = [
            *self.server_state.default_headers,
            *response.raw_headers,
            *API_HEADERS,
            (b"x-request-id", request_id.encode()),
            (b"connection", b"close"),
        ]
        if self.scheme == "https":
            headers.append(HSTS)
        parts = [STATUS_LINE[status]]
        for name, value in headers:
            parts += [name, b": ", value, b"\r\n"]
        parts += [b"\r\n", bytes(response.body)]
        self.transport.write(b"".join(parts))

    def _close(self) -> None:
        """Close now; the app (if it waits for this request's body) reads a disconnect, and
        anything it still sends is dropped."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


class ResponseCycle(RequestResponseCycle):
    """uvicorn's request-response cycle (0.54's `send`, the same bytes) with a response's
    head held until its first body message and written with it: one `transport.write` per
    response, not two. Its header checks run on all names at once and all values at once
    (the same rules, a fraction of the regular-expression calls). A response that fails
    after its start (a body longer or shorter than its `Content-Length`, an app that raises)
    is never half-written: uvicorn closes the connection, and the held head goes nowhere.
    `tests/test_server_protocol.py` compares its bytes with uvicorn's own protocol's."""

    _head = b""
    """The response's head until its first body message (an instance attribute once set)."""

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{kind}'."
                )
            self.response_started = True
            self.waiting_for_100_continue = False
            self._head = self._response_head(message)
            return
        if self.response_complete:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}' sent, after response already completed."
            )
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        body: bytes = message.get("body", b"")
        more_body = message.get("more_body", False)
        head, self._head = self._head, b""
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            data = head
        elif self.chunked_encoding:
            data = head + (b"%x\r\n%b\r\n" % (len(body), body) if body else b"")
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            data = head + body
        if data:
            self.transport.write(data)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _response_head(self, message: Any) -> bytes:
        """The status line and headers of `message` (`http.response.start`), as uvicorn's
        `send` writes them, and the framing they ask for."""
        status_code: int = message["status"]
        headers = self.default_headers + list(message.get("headers", []))
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                self.scope["method"],
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                status_code,
            )
        if HEADER_RE.search(b"".join([name for name, _ in headers])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"".join([value for _, value in headers])):
            raise RuntimeError("Invalid HTTP header value.")
        content = [STATUS_LINE[status_code]]
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
                if b"close" in connection:
                    self.keep_alive = False
                    has_connection_close = True
            content.extend([name, b": ", value, b"\r\n"])
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status_code not in (204, 304)
        ):
            self.chunked_encoding = True  # neither content-length nor transfer-encoding
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)
