"""Hostile HTTP against a real service process, started as the README's production command
starts it: connections that never finish, huge and malformed request heads, a thousand slow
clients, and what every answer carries.

Real sockets on 127.0.0.1 throughout. Slow clients are paced with sleeps (being slow is the
behaviour under test); every wait for the server is a read with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults._support import ServiceProcess
from tests.support.rawhttp import (
    HOST,
    ROOT,
    RawResponse,
    exchange,
    make_run_uvicorn_args,
    open_sockets,
    parse_response,
    peak_rss_bytes,
    read_response,
    readme_production_command,
    reset_peak_rss,
    wait_closed,
)
from tests.support.tokens import TEST_SECRET

TIMEOUT = 2.0  # HEADER_TIMEOUT_SECONDS and BODY_TIMEOUT_SECONDS of the shared service
API_CSP = "default-src 'none'; frame-ancestors 'none'"
PROTOCOL_CLASS = "taskapi.server:HttpToolsProtocol"
# uvloop's clock is read once per loop iteration, so a deadline may start a little early.
CLOCK_SLACK = 0.05


def service_env(sqlite_path: Path, **settings: str) -> dict[str, str]:
    return {
        "DATABASE_URL": "",
        "SQLITE_PATH": str(sqlite_path),
        "JWT_SECRET": TEST_SECRET,
        "ENVIRONMENT": "test",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        **settings,
    }


def start_production_service(sqlite_path: Path, **settings: str) -> ServiceProcess:
    """The README's production command (one worker), on SQLite."""
    process = ServiceProcess(service_env(sqlite_path, **settings))
    process.command = readme_production_command(process.port)
    process.start(timeout=60)
    process.wait_for_line("Uvicorn running on", timeout=30)  # listening (after the startup)
    return process


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_production_service(
        tmp_path_factory.mktemp("server") / "service.db",
        HEADER_TIMEOUT_SECONDS=str(TIMEOUT),
        BODY_TIMEOUT_SECONDS=str(TIMEOUT),
    )
    try:
        yield process
    finally:
        process.stop()


def assert_service_error(response: RawResponse | None, status: int, code: str) -> None:
    """The service's error: `{detail, code}` as JSON, with the headers of every answer."""
    assert response is not None, "the server closed without an answer"
    assert response.status == status, (response.status, response.body[:200])
    assert response.header("content-type") == "application/json", response.headers
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert body["code"] == code, body
    assert body["detail"], body
    assert_service_headers(response)


def assert_service_headers(response: RawResponse) -> None:
    request_id = response.header("x-request-id") or ""
    assert re.fullmatch(r"[A-Za-z0-9._\-]{1,64}", request_id), response.headers
    assert response.header("x-content-type-options") == "nosniff", response.headers
    assert response.header("cache-control") == "no-store", response.headers
    assert response.header("x-frame-options") == "DENY", response.headers
    assert response.header("content-security-policy") == API_CSP, response.headers
    assert response.header("server") is None, response.headers


# --- the commands ----------------------------------------------------------------------------


def test_production_command_and_make_run_use_the_protocol_without_a_banner() -> None:
    for args in (readme_production_command(8000), make_run_uvicorn_args()):
        assert args[args.index("--http") + 1] == PROTOCOL_CLASS, args
        assert "--no-server-header" in args, args


# --- connections that never finish -----------------------------------------------------------

HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"
POST_HEAD = (
    b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n"
)


async def slow_client(
    port: int, first: bytes, trickle: bytes | None, every: float
) -> tuple[float, bytes]:
    """Send `first`, then one `trickle` byte every `every` seconds until the server closes.
    Returns how long the connection lived and what the server sent."""
    opened = time.monotonic()  # the server's deadline starts later (when it accepts)
    reader, writer = await asyncio.open_connection(HOST, port)

    async def trickling() -> None:
        writer.write(first)
        while trickle is not None:
            await asyncio.sleep(every)  # pacing: the slow client is the behaviour under test
            writer.write(trickle)
            await writer.drain()

    sender = asyncio.create_task(trickling())
    try:
        received, closed = await wait_closed(reader, TIMEOUT + 15)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await sender
        writer.close()
    return closed - opened, received


async def test_connections_that_never_finish_are_closed(service: ServiceProcess) -> None:
    cases = {
        "sends nothing": (b"", None),
        "headers one byte at a time": (HEAD + b"X-Slow: ", b"a"),
        "declares Content-Length 1000, trickles": (POST_HEAD + b'{"title": "', b"a"),
        "body stalls": (POST_HEAD + b'{"title": "', None),
    }
    results = await asyncio.gather(
        *(slow_client(service.port, first, bytes_, every=0.25) for first, bytes_ in cases.values())
    )
    for name, (lived, received) in zip(cases, results, strict=True):
        print(f"{name}: closed after {lived:.2f} s (timeout {TIMEOUT} s)")
        assert TIMEOUT - CLOCK_SLACK <= lived <= TIMEOUT + 2, (name, lived)
        response = parse_response(received)
        if name == "sends nothing":
            assert response is None, received  # nothing was asked: nothing to answer
        else:
            assert_service_error(response, 408, "REQUEST_TIMEOUT")
    # The app waiting for the two bodies read a disconnect: nothing failed.
    assert not [line for line in service.lines if "Traceback" in line or "ERROR" in line]


async def test_a_body_timeout_shorter_than_the_head_timeout_holds(tmp_path: Path) -> None:
    """The body's deadline is kept even when it is shorter than the head's: a stalled body is
    closed at BODY_TIMEOUT_SECONDS, not at HEADER_TIMEOUT_SECONDS."""
    body_timeout, header_timeout = TIMEOUT, 5 * TIMEOUT
    process = start_production_service(
        tmp_path / "service.db",
        HEADER_TIMEOUT_SECONDS=str(header_timeout),
        BODY_TIMEOUT_SECONDS=str(body_timeout),
    )
    try:
        lived, received = await slow_client(
            process.port, POST_HEAD + b'{"title": "', None, every=0.25
        )
    finally:
        process.stop()
    assert body_timeout - CLOCK_SLACK <= lived <= body_timeout + 2, lived
    assert_service_error(parse_response(received), 408, "REQUEST_TIMEOUT")


async def test_slow_but_steady_clients_are_served(service: ServiceProcess) -> None:
    """Each request on a keep-alive connection gets its own deadline: three requests, each
    sent in pieces over most of the timeout, are all answered on one connection that lives
    longer than the timeout."""
    reader, writer = await asyncio.open_connection(HOST, service.port)
    opened = time.monotonic()
    request = HEAD + b"\r\n"
    pieces = [request[:10], request[10:25], request[25:]]
    try:
        for _ in range(3):
            for index, piece in enumerate(pieces):
                if index:
                    await asyncio.sleep(TIMEOUT * 0.3)  # pacing: a slow, steady client
                writer.write(piece)
            response = await asyncio.wait_for(read_response(reader), TIMEOUT + 5)
            assert response is not None
            assert response.status == 200, response.body
    finally:
        writer.close()
    assert time.monotonic() - opened > TIMEOUT


# --- request heads -----------------------------------------------------------------------------


async def test_a_huge_header_is_refused_before_it_is_buffered(service: ServiceProcess) -> None:
    """A 32 MB header: the server answers once the head passes its bound and closes, so the
    client cannot send it all and the worker's peak memory does not grow with it."""
    assert service.proc is not None
    pid = service.proc.pid
    reset_peak_rss(pid)
    before = peak_rss_bytes(pid)
    _, writer = await asyncio.open_connection(HOST, service.port)
    chunk = b"a" * 65536
    total = 32 * 1024 * 1024
    sent = 0
    try:
        writer.write(HEAD + b"X-Big: ")
        while sent < total:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 10)
            sent += len(chunk)
        writer.write(b"\r\n\r\n")
        await asyncio.wait_for(writer.drain(), 10)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()
    grown = peak_rss_bytes(pid) - before
    print(
        f"32 MB header: server closed after the client sent {sent / 2**20:.1f} MB; "
        f"peak RSS {before / 2**20:.0f} MB -> +{grown / 2**20:.1f} MB"
    )
    assert sent < total, "the server read the whole 32 MB header"
    assert grown < 8 * 2**20, f"peak RSS grew by {grown / 2**20:.1f} MB"


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        # 20 KB of header values: within the raw bound, over the 16 KiB of names and values
        (HEAD + b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n", 431, "HEADERS_TOO_LARGE"),
        # an unfinished head over the 32 KiB bound (the client then waits)
        (HEAD + b"X-Pad: " + b"a" * 40_000, 431, "HEADERS_TOO_LARGE"),
        (b"GET /health?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI_TOO_LONG"),
        (b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI_TOO_LONG"),
    ],
    ids=["headers-20KB", "unfinished-head-40KB", "url-100KB", "path-9KB"],
)
async def test_oversized_heads_are_refused_in_the_error_body(
    service: ServiceProcess, request_bytes: bytes, status: int, code: str
) -> None:
    response, closed = await exchange(service.port, request_bytes)
    assert_service_error(response, status, code)
    assert closed


# --- malformed HTTP ----------------------------------------------------------------------------

MALFORMED = {
    "raw non-ASCII in the path": "GET /api/v1/tasks/é HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "control character in the path": b"GET /he\x01alth HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length not a number": b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: abc\r\n\r\n",
    "negative Content-Length": b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: -1\r\n\r\n",
    "two Content-Lengths": b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "Content-Length and chunked": b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "unknown Transfer-Encoding": b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: gzip\r\n\r\n",
    "invalid chunk size": b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "obs-fold": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "lowercase method": b"get /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "method with a separator": b"G(T /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/9.9": b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    "space in a header name": b"GET /health HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n",
    "space before the colon": b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
    "header without a colon": b"GET /health HTTP/1.1\r\nHost: x\r\nXAb\r\n\r\n",
    "NUL in a header value": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "bare CR line ends": b"GET /health HTTP/1.1\rHost: x\r\r",
    "bare LF line ends": b"GET /health HTTP/1.1\nHost: x\n\n",
    "CONNECT": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "a TLS ClientHello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
}


@pytest.mark.parametrize("request_bytes", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_http_is_a_400_in_the_error_body(
    service: ServiceProcess, request_bytes: bytes
) -> None:
    response, closed = await exchange(service.port, request_bytes)
    assert_service_error(response, 400, "BAD_REQUEST")
    assert response is not None
    assert response.header("connection") == "close"
    assert closed


# --- what every answer carries ---------------------------------------------------------------


async def test_answers_carry_no_server_banner_and_hsts_only_over_https(
    service: ServiceProcess,
) -> None:
    plain, _ = await exchange(service.port, HEAD + b"Connection: close\r\n\r\n")
    assert plain is not None
    assert plain.status == 200
    assert_service_headers(plain)
    assert plain.header("strict-transport-security") is None
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1 (--forwarded-allow-ips' default)
    proxied, _ = await exchange(
        service.port, HEAD + b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
    )
    assert proxied is not None
    assert proxied.status == 200
    assert proxied.header("strict-transport-security") == "max-age=31536000"


# --- a thousand slow clients -------------------------------------------------------------------

SLOW_CLIENTS = 1000
LOAD_CONNECTIONS = 8
LOAD_SECONDS = 1.5  # per phase
SLOW_TIMEOUT = 10.0  # HEADER_TIMEOUT_SECONDS' default: this service runs with the defaults


async def get_load(port: int, seconds: float = LOAD_SECONDS) -> list[float]:
    """GET /health on keep-alive connections, one request at a time each, from another
    process (tests.support.loadgen), so that the slow clients here cost it nothing."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.loadgen",
        str(port),
        "/health",
        str(seconds),
        str(LOAD_CONNECTIONS),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"the load generator failed:\n{errors.decode()[-3000:]}"
    try:
        latencies: list[float] = json.loads(output)
    except json.JSONDecodeError as error:
        raise AssertionError(
            f"{error}: {output[max(0, error.pos - 100) : error.pos + 100]!r} ({len(output)} bytes)"
        ) from None
    assert len(latencies) >= 100, len(latencies)
    return latencies


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


@pytest.fixture
def many_files() -> Iterator[None]:
    """Room for a thousand sockets on each side (the service inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4 * SLOW_CLIENTS
    assert hard == resource.RLIM_INFINITY or hard >= needed, f"RLIMIT_NOFILE hard limit {hard}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_thousand_slow_clients_do_not_slow_others_and_are_closed(
    many_files: None, tmp_path: Path
) -> None:
    service = start_production_service(tmp_path / "slow.db")
    assert service.proc is not None
    pid = service.proc.pid
    slow: list[tuple[asyncio.StreamWriter, float, asyncio.Task[tuple[bytes, float]]]] = []
    trickler: asyncio.Task[None] | None = None
    try:
        await get_load(service.port, 0.5)  # warm up
        before_load = await get_load(service.port)
        sockets_before = open_sockets(pid)

        async def open_slow() -> None:
            connecting = time.monotonic()  # the server's deadline starts later (when it accepts)
            reader, writer = await asyncio.open_connection(HOST, service.port)
            writer.write(HEAD + b"X-Slow: ")
            closed = asyncio.create_task(wait_closed(reader, SLOW_TIMEOUT + 15))
            slow.append((writer, connecting, closed))

        await asyncio.gather(*(open_slow() for _ in range(SLOW_CLIENTS)))

        async def trickle() -> None:
            """Each slow client sends a byte a second, not all at the same moment."""
            slices = 20
            while True:
                for start in range(slices):
                    await asyncio.sleep(1 / slices)  # pacing: the slow clients' behaviour
                    for writer, _, _ in slow[start::slices]:
                        if not writer.is_closing():
                            with contextlib.suppress(OSError):
                                writer.write(b"a")

        trickler = asyncio.create_task(trickle())
        deadline = time.monotonic() + 10
        while open_sockets(pid) < sockets_before + SLOW_CLIENTS - LOAD_CONNECTIONS:
            assert time.monotonic() < deadline, "the service did not accept the slow clients"
            await asyncio.sleep(0.05)
        during_load = await get_load(service.port)
        still_open = sum(not closed.done() for _, _, closed in slow)

        lifetimes = []
        for _, opened, closed in slow:
            with contextlib.suppress(TimeoutError):
                lifetimes.append((await closed)[1] - opened)
        trickler.cancel()
        after_load = await get_load(service.port)
    finally:
        if trickler is not None:
            trickler.cancel()
        for writer, _, closed in slow:
            closed.cancel()
            writer.close()
        service.stop()

    before, during, after = (p99(load) for load in (before_load, during_load, after_load))
    baseline = max(before, after)
    closures = (
        f"{min(lifetimes):.2f}-{max(lifetimes):.2f} s (median {statistics.median(lifetimes):.2f})"
        if lifetimes
        else "never"
    )
    print(
        f"GET /health p99 ({LOAD_CONNECTIONS} connections, {LOAD_SECONDS} s, "
        f"{len(before_load)}/{len(during_load)}/{len(after_load)} requests): "
        f"{before * 1000:.2f} ms before, {during * 1000:.2f} ms with "
        f"{SLOW_CLIENTS} slow clients open ({still_open} still open when the load ended), "
        f"{after * 1000:.2f} ms after; {len(lifetimes)} slow clients closed by the server "
        f"after {closures} (timeout {SLOW_TIMEOUT} s)"
    )
    assert still_open == SLOW_CLIENTS, "slow clients were closed before the load ended"
    assert len(lifetimes) == SLOW_CLIENTS, f"{SLOW_CLIENTS - len(lifetimes)} never closed"
    assert during <= 2 * max(baseline, 0.002), (before, during, after)
    assert min(lifetimes) >= SLOW_TIMEOUT - CLOCK_SLACK, lifetimes
    assert max(lifetimes) <= SLOW_TIMEOUT + 5, max(lifetimes)
