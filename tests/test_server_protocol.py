"""The service's HTTP protocol class in process, byte by byte: where its bounds on a request
head lie exactly, that what is within them (pipelined requests included) is served, and that
each response is written once, with the very bytes uvicorn's own protocol writes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as UvicornProtocol
from uvicorn.server import ServerState

from taskapi.server import MAX_REQUEST_HEAD_BYTES, HttpToolsProtocol
from tests.support.rawhttp import RawResponse, parse_response


class FakeTransport:
    """What uvicorn's protocol uses of an asyncio transport, recording what is written."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request's method, path and body length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = json.dumps({"path": scope["path"], "size": size}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def connect(
    app: Any = echo_app, protocol_class: type[UvicornProtocol] = HttpToolsProtocol
) -> tuple[UvicornProtocol, FakeTransport]:
    config = Config(app=app, lifespan="off", log_level="critical", server_header=False)
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def responses(data: bytes) -> list[RawResponse]:
    """Every response in `data` (each framed by Content-Length)."""
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        response = parse_response(head + b"\r\n\r\n" + rest[:length])
        assert response is not None
        found.append(response)
        data = rest[length:]
    return found


async def until(condition: Any, within: float = 5) -> None:
    """Let the loop run until `condition()` holds (fails after `within` seconds)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0)


def refusal(transport: FakeTransport) -> tuple[int, str]:
    response = parse_response(bytes(transport.written))
    assert response is not None, "nothing was written"
    assert transport.closed
    return response.status, response.json()["code"]


async def test_an_unfinished_head_is_refused_once_it_passes_the_bound() -> None:
    protocol, transport = connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
    fed = 30
    while not transport.written:
        assert fed <= MAX_REQUEST_HEAD_BYTES, "nothing answered within the bound"
        protocol.data_received(b"a" * 1024)
        fed += 1024
    assert fed > MAX_REQUEST_HEAD_BYTES
    assert refusal(transport) == (431, "HEADERS_TOO_LARGE")


async def test_a_whole_head_within_the_bound_reaches_the_app() -> None:
    """Within 32 KiB the protocol hands the head on: the edge middleware then refuses names
    and values over 16 KiB (431) with the answer every request gets."""
    protocol, transport = connect()
    value = b"a" * (MAX_REQUEST_HEAD_BYTES - 100)
    protocol.data_received(b"GET /h HTTP/1.1\r\nHost: x\r\nX-Pad: " + value + b"\r\n\r\n")
    await until(lambda: transport.written)
    assert responses(bytes(transport.written))[0].status == 200


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        # arriving in pieces: refused at the bound, the target alone being over 8 KiB
        ([b"GET /a?" + b"q" * 1024] + [b"q" * 1024] * 40, (414, "URI_TOO_LONG")),
        # read whole, over the 64 KiB httptools can parse: refused rather than a plain 400
        ([b"GET /a?" + b"q" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"], (414, "URI_TOO_LONG")),
    ],
    ids=["arriving", "whole"],
)
async def test_a_long_url_is_414(pieces: list[bytes], expected: tuple[int, str]) -> None:
    protocol, transport = connect()
    for piece in pieces:
        protocol.data_received(piece)
        if transport.closed:
            break
    assert refusal(transport) == expected


async def test_a_head_that_cannot_be_parsed_is_400_in_the_error_body() -> None:
    protocol, transport = connect()
    protocol.data_received(b"GET /h HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")
    assert refusal(transport) == (400, "BAD_REQUEST")


async def test_pipelined_requests_after_a_large_body_are_served() -> None:
    """A read holding the end of one request and the start of the next counts only toward
    the next request's head what belongs to it."""
    protocol, transport = connect()
    body = b"x" * 60_000
    first = b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n" + body
    second = b"GET /two HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 12_000
    protocol.data_received(first + second)
    protocol.data_received(b"\r\n\r\n")
    await until(lambda: len(responses(bytes(transport.written))) == 2)
    one, two = responses(bytes(transport.written))
    assert (one.status, one.json()) == (200, {"path": "/one", "size": 60_000})
    assert (two.status, two.json()) == (200, {"path": "/two", "size": 0})
    assert not transport.closed


async def test_keep_alive_requests_each_get_a_fresh_head_count() -> None:
    protocol, transport = connect()
    request = b"GET /k HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 12_000 + b"\r\n\r\n"
    for count in range(1, 4):
        protocol.data_received(request)
        await until(lambda count=count: len(responses(bytes(transport.written))) == count)
    assert [r.status for r in responses(bytes(transport.written))] == [200, 200, 200]


async def test_a_bad_head_pipelined_behind_an_unanswered_request_closes_without_answer() -> None:
    """No refusal may be read as the answer to the earlier request: the connection closes,
    and the app's answer to that request is dropped."""
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.set()
        await release.wait()
        await echo_app(scope, receive, send)

    protocol, transport = connect(slow_app)
    protocol.data_received(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(started.wait(), 5)
    protocol.data_received(b"get /two HTTP/1.1\r\nHost: x\r\n\r\n")  # a lowercase method
    assert transport.closed
    assert not transport.written
    release.set()
    await until(lambda: not protocol.tasks)  # the app has finished
    assert not transport.written


# --- one write per response ----------------------------------------------------------------


async def streaming_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """No Content-Length: uvicorn frames the body in chunks, one per message."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"one", b"two", b""):
        await send({"type": "http.response.body", "body": part, "more_body": bool(part)})


async def empty_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """304 (a conditional GET's answer): no body at all."""
    await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", b'"3"')]})
    await send({"type": "http.response.body", "body": b""})


async def closing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Asks for the connection to close after its answer, and yields between start and body."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"2"), (b"connection", b"close")],
        }
    )
    await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"ok"})


async def serve(protocol_class: type[UvicornProtocol], app: Any, requests: bytes) -> FakeTransport:
    protocol, transport = connect(app, protocol_class)
    protocol.data_received(requests)
    await until(lambda: transport.closed or (not protocol.tasks and not protocol.pipeline))
    await asyncio.sleep(0)
    return transport


GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
PIPELINED = (
    GET
    + b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    + b"HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n"
    + GET
)


@pytest.mark.parametrize(
    ("app", "requests", "writes"),
    [
        (echo_app, GET, [1]),
        (echo_app, PIPELINED, [1, 1, 1, 1]),  # the HEAD's answer is its head alone
        (empty_app, GET + GET, [1, 1]),
        (closing_app, GET, [1]),
        (streaming_app, GET, [3]),  # head and first chunk, the second, the last chunk
    ],
    ids=["content-length", "pipelined-with-head", "no-body", "connection-close", "chunked"],
)
async def test_each_response_is_one_write_of_uvicorns_own_bytes(
    app: Any, requests: bytes, writes: list[int]
) -> None:
    """Differential: the same requests through uvicorn's protocol and the service's give the
    same bytes and the same closing; the service's writes a response (its head with its
    first body message) in one write, where uvicorn's writes the head and body apart."""
    theirs = await serve(UvicornProtocol, app, requests)
    ours = await serve(HttpToolsProtocol, app, requests)
    assert bytes(ours.written) == bytes(theirs.written)
    assert ours.closed == theirs.closed
    assert len(ours.writes) == sum(writes)
    assert len(theirs.writes) > len(ours.writes)  # what this saves
    if app is echo_app:
        heads = [w for w in ours.writes if w.startswith(b"HTTP/1.1 200")]
        assert len(heads) == len(writes)  # each write begins a response


async def test_a_response_started_but_never_finished_closes_without_a_partial_head() -> None:
    """The app starts an answer and fails: uvicorn closes the connection; the head it held
    is never written (a client sees a closed connection, not a head without its body)."""

    async def failing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]}
        )
        raise RuntimeError("failed after starting")

    ours = await serve(HttpToolsProtocol, failing_app, GET)
    assert ours.closed
    assert not ours.written


def start(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": list(headers)}


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([start((b"x-a", b"1\r\nx"))], "Invalid HTTP header value."),
        ([start((b"x a", b"1"))], "Invalid HTTP header name."),
        (
            [start((b"content-length", b"2")), {"type": "http.response.body", "body": b"long"}],
            "Response content longer than Content-Length",
        ),
    ],
    ids=["header-value", "header-name", "body-too-long"],
)
async def test_a_response_uvicorn_refuses_is_never_half_written(
    messages: list[dict[str, Any]], error: str
) -> None:
    """uvicorn's checks of what the app sends still run (the app's `send` raises what
    uvicorn's raises), and nothing of that response is written."""
    raised: list[BaseException] = []

    async def refused_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            for message in messages:
                await send(message)
        except RuntimeError as failure:
            raised.append(failure)
            raise

    ours = await serve(HttpToolsProtocol, refused_app, GET)
    assert [str(failure) for failure in raised] == [error]
    assert ours.closed
    assert not ours.written
