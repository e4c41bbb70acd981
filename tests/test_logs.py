"""Logs: JSON lines (or text), one access line per request with its route template, the
request id on every line of a request, and nothing a client sent (token, body, query,
raw path) in any line, even through an unexpected error."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager

from taskapi.app import create_app
from taskapi.config import Settings
from taskapi.logs import JSONFormatter, TextFormatter
from taskapi.requestctx import set_request_id
from tests.conftest import make_settings
from tests.faults._support import ServiceProcess
from tests.support import databases
from tests.support.rawhttp import exchange, readme_production_command
from tests.support.tokens import TEST_SECRET, make_token
from tests.support.uvicorn import Uvicorn

TASKS = "/api/v1/tasks"


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, jwt_secret=TEST_SECRET, **values)  # type: ignore[call-arg]


def test_log_format_is_json_in_production_and_text_in_development() -> None:
    assert _settings(environment="production").resolved_log_format == "json"
    assert _settings(environment="staging").resolved_log_format == "json"
    assert _settings(environment="development").resolved_log_format == "text"
    assert _settings(environment="test").resolved_log_format == "text"
    assert _settings(environment="production", log_format="text").resolved_log_format == "text"
    assert _settings(environment="development", log_format="json").resolved_log_format == "json"


def _record(exc: BaseException | None = None) -> logging.LogRecord:
    return logging.LogRecord(
        "taskapi.errors",
        logging.ERROR,
        __file__,
        1,
        "unhandled error",
        None,
        (type(exc), exc, exc.__traceback__) if exc is not None else None,
    )


def _raised(message: str) -> BaseException:
    try:
        try:
            raise ValueError(f"inner {message}")
        except ValueError as inner:
            raise RuntimeError(f"outer {message}") from inner
    except RuntimeError as error:
        return error


def test_an_exception_in_a_request_is_logged_without_its_message() -> None:
    error = _raised("SECRET-IN-MESSAGE")
    set_request_id("req-1")
    try:
        line = JSONFormatter().format(_record(error))
        text = TextFormatter().format(_record(error))
    finally:
        set_request_id("-")
    entry = json.loads(line)
    assert entry["request_id"] == "req-1"
    assert entry["level"] == "ERROR"
    assert "builtins.ValueError" in entry["exception"]  # the cause too, and where
    assert "builtins.RuntimeError" in entry["exception"]
    assert "_raised" in entry["exception"]
    assert "SECRET-IN-MESSAGE" not in line
    assert "[req-1]" in text
    assert "builtins.RuntimeError" in text
    assert "SECRET-IN-MESSAGE" not in text
    # Outside a request (start-up, background work) the message is what an operator needs.
    outside = json.loads(JSONFormatter().format(_record(error)))
    assert "request_id" not in outside
    assert "outer SECRET-IN-MESSAGE" in outside["exception"]


# --- in process ----------------------------------------------------------------------------


async def _serve(settings: Settings, requests: list[tuple[str, str, dict[str, str]]]) -> str:
    """Run the app, send `requests` (method, url, headers), stop it; what it logged."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    app = create_app(settings, log_stream=stream)
    try:
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                for method, url, headers in requests:
                    await client.request(method, url, headers=headers)
    finally:
        root.setLevel(level)
    return stream.getvalue()


async def test_text_access_lines_in_development(tmp_path: Path, sqlite_template: Path) -> None:
    url = f"sqlite:///{databases.copy_sqlite(sqlite_template, tmp_path / 't.db')}"
    settings = make_settings(url, environment="development", log_level="INFO")
    alice = {"Authorization": f"Bearer {make_token('alice')}", "X-Request-ID": "text-1"}
    output = await _serve(
        settings,
        [("GET", f"{TASKS}/12345", alice), ("GET", "/health/", {"X-Request-ID": "text-2"})],
    )
    access = [line for line in output.splitlines() if " taskapi.access " in line]
    assert len(access) == 2, output
    assert (
        access[0]
        .split(" ", 1)[1]
        .startswith("INFO taskapi.access [text-1] GET /api/v1/tasks/{task_id} 404 ")
    )
    assert access[0].endswith(" user=alice")
    assert " [text-2] GET /health 200 " in access[1]
    assert "user=" not in access[1]


@pytest.mark.parametrize(
    "overrides", [{"access_log": False, "log_level": "INFO"}, {"log_level": "WARNING"}]
)
async def test_the_access_log_can_be_off(
    tmp_path: Path, sqlite_template: Path, overrides: dict[str, Any]
) -> None:
    url = f"sqlite:///{databases.copy_sqlite(sqlite_template, tmp_path / 't.db')}"
    settings = make_settings(url, log_format="json", **overrides)
    output = await _serve(settings, [("GET", "/health", {})])
    assert "taskapi.access" not in output


# --- a real process ------------------------------------------------------------------------


def _marker(name: str) -> str:
    return f"MARKER-{name}-{uuid.uuid4().hex}"


def test_every_line_is_json_and_none_holds_what_a_client_sent(tmp_path: Path) -> None:
    """The production format from a real uvicorn, uvicorn's own lines included: one JSON
    object a line; one access line per request (request id, method, route template,
    status, duration, user); the 500s' error lines carry their request id; and no token,
    body, query or raw path, sent with marker strings through every path (a good token, a
    bad header, a token failing verification, an unknown path, a query, an error quoting
    its input), appears in any line."""
    markers: dict[str, str] = {}

    def mark(name: str) -> str:
        markers[name] = _marker(name)
        return markers[name]

    good_token = make_token("log-user")
    markers["good token"] = good_token
    markers["its signature"] = good_token.rsplit(".", 1)[1]
    forged = jwt.encode(
        {"sub": mark("forged sub"), "exp": 4_000_000_000}, "another-secret-" + "x" * 32
    )
    markers["forged token"] = forged
    markers["secret"] = TEST_SECRET
    good = {"Authorization": f"Bearer {good_token}"}
    json_body = {"Content-Type": "application/json"}

    env = {
        "ENVIRONMENT": "production",
        "JWT_SECRET": TEST_SECRET,
        "SQLITE_PATH": str(tmp_path / "logs.db"),
        "LOG_LEVEL": "INFO",
        "CORS_ORIGINS": "http://localhost:3000",
        "DATABASE_URL": "",
        "JWKS_URL": "",
        "LOG_FORMAT": "",
        "REDIS_URL": "",
        "METRICS_ENABLED": "false",
    }
    sent: dict[str, tuple[str, str, int, str | None]] = {}  # id -> method, route, status, user
    with Uvicorn("tests.support.failing_app:app", env, ["--workers", "1"]) as server:
        # Not "Application startup complete": one uvicorn process binds its port after that.
        server.wait_for("Uvicorn running on")
        with httpx.Client(base_url=server.base_url, timeout=30) as client:

            def send(
                rid: str,
                method: str,
                url: str,
                route: str,
                status: int,
                user: str | None = None,
                **kwargs: Any,
            ) -> httpx.Response:
                headers = {"X-Request-ID": rid, **kwargs.pop("headers", {})}
                response = client.request(method, url, headers=headers, **kwargs)
                assert response.status_code == status, (rid, response.text)
                sent[rid] = (method, route, status, user)
                return response

            body = {"title": mark("title"), "description": mark("description")}
            created = send("create", "POST", TASKS, TASKS, 201, "log-user", json=body, headers=good)
            assert created.json()["title"] == markers["title"]  # the body did reach the service
            one = f"{TASKS}/{created.json()['id']}"
            template = TASKS + "/{task_id}"
            send("read", "GET", one, template, 200, "log-user", headers=good)
            query = f"{one}?access_token={mark('query token')}&q={mark('query')}"
            send("query", "GET", query, template, 200, "log-user", headers=good)
            send(
                "list", "GET", f"{TASKS}?token={mark('list query')}", TASKS, 200, "log-user",
                headers=good,
            )  # fmt: skip
            basic = {"Authorization": f"Basic {mark('basic')}"}
            send("basic", "GET", one, template, 401, headers=basic)
            send(
                "two-words", "GET", one, template, 401,
                headers={"Authorization": f"Bearer {mark('word')} {mark('another word')}"},
            )  # fmt: skip
            send("forged", "GET", one, template, 401, headers={"Authorization": f"Bearer {forged}"})
            send(
                "not-a-jwt", "DELETE", one, template, 401,
                headers={"Authorization": f"Bearer {mark('not a jwt')}"},
            )  # fmt: skip
            send(
                "bad-body", "POST", TASKS, TASKS, 422, "log-user",
                content=json.dumps({"title": 5, "description": mark("invalid body")}),
                headers={**good, **json_body},
            )  # fmt: skip
            send("unknown", "GET", f"/{mark('path')}/x?{mark('unknown query')}", "(unmatched)", 404)
            # The fast path, then FastAPI (an id it leaves to FastAPI): each fails quoting
            # the body's title, as a driver or a validator can.
            for rid, url in (
                ("fails-fast", one),
                ("fails-routed", f"{TASKS}/0{one[len(TASKS) + 1 :]}"),
            ):
                failed = send(
                    rid, "PUT", url, template, 500, "log-user",
                    json={"title": mark(rid)}, headers=good,
                )  # fmt: skip
                assert failed.json()["code"] == "INTERNAL_ERROR"
        server.stop()  # graceful: the lifespan ends and writes what it holds

    entries = []
    for line in server.lines:
        entry = json.loads(line)  # every line, uvicorn's included, is one JSON object
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)

    assert any(e["message"] == "Application shutdown complete." for e in entries)
    access = {e["request_id"]: e for e in entries if e["logger"] == "taskapi.access"}
    assert len(access) == len([e for e in entries if e["logger"] == "taskapi.access"])
    assert access.keys() == sent.keys()
    for rid, (method, route, status, user) in sent.items():
        entry = access[rid]
        assert (entry["method"], entry["route"], entry["status"]) == (method, route, status)
        assert entry.get("user_id") == user, entry
        assert entry["level"] == "INFO"
        assert isinstance(entry["duration_ms"], float)
        assert entry["duration_ms"] > 0
        assert entry["time"].endswith("Z")

    for rid in ("fails-fast", "fails-routed"):
        errors = [e for e in entries if e["level"] == "ERROR" and e.get("request_id") == rid]
        assert errors, f"no error line for {rid}"
        assert all("builtins.RuntimeError" in e["exception"] for e in errors), errors
    auth_failures = [e for e in entries if e["message"].startswith("authentication failed")]
    assert {e["request_id"] for e in auth_failures} == {"basic", "two-words", "forged", "not-a-jwt"}

    written = "\n".join(server.lines)
    leaked = [name for name, value in markers.items() if value in written]
    assert leaked == [], f"written to the log: {leaked}"


def test_the_production_command_writes_json_and_its_protocols_408_is_the_access_lines_status(
    tmp_path: Path,
) -> None:
    """The README's production command (the service's HTTP protocol, --log-config): every
    line JSON, uvicorn's included; a request whose body comes too late is answered 408 by
    the protocol while the app waits for the body, and its access line says 408, not what
    the app then answers the disconnect it reads (which no client receives)."""
    process = ServiceProcess(
        {
            "ENVIRONMENT": "production",
            "JWT_SECRET": TEST_SECRET,
            "SQLITE_PATH": str(tmp_path / "logs.db"),
            "DATABASE_URL": "",
            "JWKS_URL": "",
            "REDIS_URL": "",
            "CORS_ORIGINS": "http://localhost:3000",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "",
            "METRICS_ENABLED": "false",
            "HEADER_TIMEOUT_SECONDS": "2",
            "BODY_TIMEOUT_SECONDS": "2",
        }
    )
    process.command = readme_production_command(process.port)
    assert "--log-config" in process.command
    process.start(timeout=60)
    try:
        process.wait_for_line("Uvicorn running on", timeout=30)
        body = b'{"title": "never finished"}'
        head = (
            "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {make_token('late-user')}\r\nX-Request-ID: late-body\r\n"
            f"Content-Length: {len(body) + 10}\r\n\r\n"
        ).encode()
        response, closed = asyncio.run(exchange(process.port, head + body, within=15))
        assert closed
        assert response is not None, "closed without an answer"
        assert (response.status, response.json()["code"]) == (408, "REQUEST_TIMEOUT")
        answered_id = response.header("x-request-id")
        assert answered_id
        line = process.wait_for_line(f'"request_id":"{answered_id}","method"', timeout=30)
        entry = json.loads(line)
        assert entry["logger"] == "taskapi.access", entry
        assert (entry["method"], entry["route"], entry["status"]) == ("POST", TASKS, 408)
        assert "user_id" not in entry  # the edge reads the body before anything checks the token
    finally:
        process.stop()
    for line in process.lines:  # uvicorn's own lines too
        assert isinstance(json.loads(line), dict), line
