"""Edge behaviour: CORS, trailing slashes, framework errors, body limits, headers, OpenAPI."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from taskapi.models import tasks
from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
ORIGIN = "http://localhost:3000"
MAX_BODY = 2048


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_body_bytes": MAX_BODY}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert body["code"] == code, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return dict(body)


async def task_count(app: FastAPI) -> int:
    async with app.state.engine.connect() as connection:
        result = await connection.execute(select(func.count()).select_from(tasks))
        return int(result.scalar_one())


async def create(client: httpx.AsyncClient, title: str = "t", sub: str = "alice") -> dict[str, Any]:
    response = await client.post(TASKS, json={"title": title}, headers=auth(sub))
    assert response.status_code == 201, response.text
    return dict(response.json())


def header_list(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


# --- CORS ---------------------------------------------------------------------------------


async def test_cors_preflight_allows_configured_origin_without_token(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options(
        TASKS,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in {
        m.upper() for m in header_list(response.headers.get("access-control-allow-methods"))
    }
    allowed = header_list(response.headers.get("access-control-allow-headers"))
    assert {"authorization", "content-type"} <= allowed
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("path", [f"{TASKS}/1", f"{TASKS}/"])
async def test_cors_preflight_on_other_task_paths(client: httpx.AsyncClient, path: str) -> None:
    response = await client.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN


async def test_cors_preflight_from_disallowed_origin_is_not_allowed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options(
        TASKS,
        headers={
            "Origin": "https://evil.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert "access-control-allow-origin" not in response.headers
    assert response.status_code == 400
    assert response.json() == {"detail": "Disallowed CORS origin", "code": "CORS_REJECTED"}


async def test_simple_request_from_disallowed_origin_gets_no_allow_origin(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        TASKS, headers={**auth("alice"), "Origin": "https://evil.example.com"}
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_simple_request_exposes_location_and_link(client: httpx.AsyncClient) -> None:
    response = await client.get(TASKS, headers={**auth("alice"), "Origin": ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    exposed = header_list(response.headers.get("access-control-expose-headers"))
    assert {"location", "link"} <= exposed


async def test_cors_headers_on_error_responses(client: httpx.AsyncClient) -> None:
    """A browser can only read a 401's `code` if the error carries the CORS headers too."""
    response = await client.get(TASKS, headers={"Origin": ORIGIN})
    assert_error(response, 401, "MISSING_TOKEN")
    assert response.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize(
    ("path", "origin"),
    [
        (TASKS, None),
        (TASKS, ORIGIN),
        (TASKS, "https://evil.example.com"),
        ("/health", None),
        (f"{TASKS}/abc", None),  # an answer FastAPI renders
    ],
)
async def test_every_answer_varies_on_origin(
    client: httpx.AsyncClient, path: str, origin: str | None
) -> None:
    """Caches must not serve one origin's answer (with or without CORS headers) to another."""
    headers = {**auth("alice"), **({"Origin": origin} if origin else {})}
    response = await client.get(path, headers=headers)
    assert response.headers.get_list("vary") == ["Origin"]


async def test_created_response_exposes_location(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TASKS, json={"title": "x"}, headers={**auth("alice"), "Origin": ORIGIN}
    )
    assert response.status_code == 201
    assert response.headers["location"] == f"{TASKS}/{response.json()['id']}"
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "location" in header_list(response.headers.get("access-control-expose-headers"))


# --- trailing slashes ---------------------------------------------------------------------


async def test_trailing_slash_list_answers_directly(client: httpx.AsyncClient) -> None:
    await create(client, "one")
    response = await client.get(f"{TASKS}/", headers=auth("alice"))
    assert response.status_code == 200, response.text
    assert [task["title"] for task in response.json()] == ["one"]


async def test_trailing_slash_create_answers_directly(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    response = await client.post(f"{TASKS}/", json={"title": "slashed"}, headers=auth("alice"))
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "slashed"
    assert await task_count(app) == 1


async def test_trailing_slash_item_answers_directly(client: httpx.AsyncClient) -> None:
    task = await create(client, "item")
    response = await client.get(f"{TASKS}/{task['id']}/", headers=auth("alice"))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == task["id"]
    put = await client.put(
        f"{TASKS}/{task['id']}/", json={"completed": True}, headers=auth("alice")
    )
    assert put.status_code == 200, put.text
    assert put.json()["completed"] is True
    deleted = await client.delete(f"{TASKS}/{task['id']}/", headers=auth("alice"))
    assert deleted.status_code == 204


async def test_trailing_slash_without_token_is_401_not_redirect(
    client: httpx.AsyncClient,
) -> None:
    assert_error(await client.get(f"{TASKS}/"), 401, "MISSING_TOKEN")


# --- framework errors ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v2/tasks", f"{TASKS}/1/extra"])
async def test_unknown_route_is_404_not_found(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers=auth("alice"))
    assert_error(response, 404, "NOT_FOUND")


async def test_patch_task_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.patch(f"{TASKS}/1", json={"title": "x"}, headers=auth("alice"))
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    allow = [method.strip() for method in response.headers["allow"].split(",")]
    assert sorted(allow) == ["DELETE", "GET", "HEAD", "PUT"]


async def test_patch_task_without_token_is_405(client: httpx.AsyncClient) -> None:
    response = await client.patch(f"{TASKS}/1", json={"title": "x"})
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert sorted(m.strip() for m in response.headers["allow"].split(",")) == [
        "DELETE",
        "GET",
        "HEAD",
        "PUT",
    ]


async def test_delete_collection_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete(TASKS, headers=auth("alice"))
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert sorted(m.strip() for m in response.headers["allow"].split(",")) == [
        "GET",
        "HEAD",
        "POST",
    ]


async def test_post_health_is_405(client: httpx.AsyncClient) -> None:
    response = await client.post("/health", json={})
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert [m.strip() for m in response.headers["allow"].split(",")] == ["GET", "HEAD"]


# --- content type and body size -----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"title": "x"}', "text/plain"),
        (b"title=x", "application/x-www-form-urlencoded"),
        (b'{"title": "x"}', "application/xml"),
    ],
    ids=["text", "form", "xml"],
)
async def test_wrong_content_type_is_415(
    client: httpx.AsyncClient, app: FastAPI, content: bytes, content_type: str
) -> None:
    task = await create(client, "before")
    headers = {**auth("alice"), "Content-Type": content_type}
    post = await client.post(TASKS, content=content, headers=headers)
    assert_error(post, 415, "UNSUPPORTED_MEDIA_TYPE")
    put = await client.put(f"{TASKS}/{task['id']}", content=content, headers=headers)
    assert_error(put, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await task_count(app) == 1
    unchanged = await client.get(f"{TASKS}/{task['id']}", headers=auth("alice"))
    assert unchanged.json()["title"] == "before"


async def test_form_data_is_415(client: httpx.AsyncClient, app: FastAPI) -> None:
    response = await client.post(TASKS, data={"title": "x"}, headers=auth("alice"))
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await task_count(app) == 0


async def test_json_with_charset_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TASKS,
        content=b'{"title": "x"}',
        headers={**auth("alice"), "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201, response.text


def _big_body() -> bytes:
    body = json.dumps({"title": "big", "description": "d" * (MAX_BODY + 500)}).encode()
    assert MAX_BODY < len(body) < 10_000  # valid otherwise: description allows 10 000 chars
    return body


async def test_body_over_limit_with_content_length_is_413(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    body = _big_body()
    response = await client.post(
        TASKS, content=body, headers={**auth("alice"), "Content-Type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "x-request-id" in response.headers
    assert await task_count(app) == 0


async def test_streamed_body_over_limit_is_413(client: httpx.AsyncClient, app: FastAPI) -> None:
    body = _big_body()
    chunks_sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for start in range(0, len(body), 512):
            chunks_sent += 1
            yield body[start : start + 512]

    response = await client.post(
        TASKS, content=stream(), headers={**auth("alice"), "Content-Type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert await task_count(app) == 0


async def test_streamed_put_over_limit_is_413(client: httpx.AsyncClient) -> None:
    task = await create(client, "keep")
    body = _big_body()

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 700):
            yield body[start : start + 700]

    response = await client.put(
        f"{TASKS}/{task['id']}",
        content=stream(),
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    unchanged = await client.get(f"{TASKS}/{task['id']}", headers=auth("alice"))
    assert unchanged.json()["title"] == "keep"
    assert unchanged.json()["description"] is None


async def test_streamed_body_under_limit_is_accepted(client: httpx.AsyncClient) -> None:
    body = json.dumps({"title": "streamed", "description": "d" * 1000}).encode()

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    response = await client.post(
        TASKS, content=stream(), headers={**auth("alice"), "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["description"] == "d" * 1000


async def test_body_at_limit_is_accepted(client: httpx.AsyncClient) -> None:
    prefix = json.dumps({"title": "edge", "description": ""}).encode()
    body = json.dumps({"title": "edge", "description": "d" * (MAX_BODY - len(prefix))}).encode()
    assert len(body) == MAX_BODY
    response = await client.post(
        TASKS, content=body, headers={**auth("alice"), "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content", [b'{"title": ', b"{'title': 'x'}", b'{"title": "x",}', b"\xff\xfe"]
)
async def test_malformed_json_is_422(
    client: httpx.AsyncClient, app: FastAPI, content: bytes
) -> None:
    response = await client.post(
        TASKS, content=content, headers={**auth("alice"), "Content-Type": "application/json"}
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    assert await task_count(app) == 0


@pytest.mark.parametrize("depth", [1500])
async def test_deeply_nested_json_under_body_limit_is_4xx(
    client: httpx.AsyncClient, app: FastAPI, depth: int
) -> None:
    body = b"[" * depth
    assert len(body) <= MAX_BODY
    response = await client.post(
        TASKS, content=body, headers={**auth("alice"), "Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"detail", "code"}
    assert await task_count(app) == 0


@pytest.mark.parametrize("settings_overrides", [{"max_body_bytes": 1024 * 1024}])
@pytest.mark.parametrize(
    "payload", [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 50_000 + b"]" * 50_000]
)
async def test_deeply_nested_json_is_4xx_never_500(
    client: httpx.AsyncClient, app: FastAPI, payload: bytes
) -> None:
    for method, url in (("POST", TASKS), ("PUT", f"{TASKS}/1")):
        response = await client.request(
            method,
            url,
            content=payload,
            headers={**auth("alice"), "Content-Type": "application/json"},
        )
        assert 400 <= response.status_code < 500, (method, response.status_code, response.text)
        assert set(response.json()) == {"detail", "code"}
    assert await task_count(app) == 0


# --- headers on every response ------------------------------------------------------------

SANE_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


@pytest.mark.parametrize(
    ("method", "path", "with_auth", "status"),
    [
        ("GET", "/health", False, 200),
        ("GET", TASKS, True, 200),
        ("GET", TASKS, False, 401),
        ("GET", "/nope", False, 404),
        ("GET", f"{TASKS}/999999", True, 404),
        ("PATCH", f"{TASKS}/1", True, 405),
    ],
)
async def test_security_headers_on_every_response(
    client: httpx.AsyncClient, method: str, path: str, with_auth: bool, status: int
) -> None:
    headers = auth("alice") if with_auth else {}
    response = await client.request(method, path, headers=headers)
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert SANE_ID.match(response.headers["x-request-id"])


async def test_request_ids_differ_per_request(client: httpx.AsyncClient) -> None:
    first = await client.get("/health")
    second = await client.get("/health")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize("request_id", ["abc-123", "trace.ID_42", "a" * 64])
async def test_sane_request_id_is_echoed(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get(TASKS, headers={**auth("alice"), "X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    assert len(response.headers.get_list("x-request-id")) == 1


@pytest.mark.parametrize(
    "request_id", ["a" * 65, "has space", "semi;colon", "<script>", "new\u00e9line", ""]
)
async def test_insane_request_id_is_replaced(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get("/health", headers=[(b"X-Request-ID", request_id.encode("utf-8"))])
    assert response.status_code == 200
    echoed = response.headers["x-request-id"]
    assert echoed != request_id
    assert SANE_ID.match(echoed)
    assert len(response.headers.get_list("x-request-id")) == 1


# --- docs and OpenAPI ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_are_html(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


async def test_openapi_declares_bearer_security_and_error_bodies(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http"
    assert scheme["scheme"].lower() == "bearer"

    schemas = spec["components"]["schemas"]
    error_body = schemas["ErrorBody"]
    assert set(error_body["properties"]) == {"detail", "code"}
    assert set(error_body.get("required", [])) == {"detail", "code"}

    task_paths = {path: ops for path, ops in spec["paths"].items() if path.startswith(TASKS)}
    assert set(task_paths) == {TASKS, f"{TASKS}/{{task_id}}"}
    operations = [
        (path, method, op)
        for path, ops in task_paths.items()
        for method, op in ops.items()
        if method in {"get", "post", "put", "delete", "patch"}
    ]
    assert sorted((p, m) for p, m, _ in operations) == [
        (TASKS, "get"),
        (TASKS, "post"),
        (f"{TASKS}/{{task_id}}", "delete"),
        (f"{TASKS}/{{task_id}}", "get"),
        (f"{TASKS}/{{task_id}}", "put"),
    ]
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("security") == [{"bearerAuth": []}], where
        expected = {"401", "422"} | ({"404"} if "{task_id}" in path else set())
        assert expected <= set(op["responses"]), (where, sorted(op["responses"]))
        for status in expected:
            content = op["responses"][status]["content"]["application/json"]
            assert _ref_name(content["schema"]) == "ErrorBody", (where, status, content)
    assert "HTTPValidationError" not in json.dumps(
        {path: spec["paths"][path] for path in task_paths}
    )


async def test_openapi_health_is_public(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "security" not in spec["paths"]["/health"]["get"]
    assert "security" not in spec  # no global requirement: /health and /ready stay public
    assert "security" not in spec["paths"]["/ready"]["get"]


async def test_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert response.headers["cache-control"] == "no-store"


async def test_oversized_headers_are_refused_with_431(client: httpx.AsyncClient) -> None:
    response = await client.get(TASKS, headers={**auth("alice"), "X-Padding": "a" * 20_000})
    assert response.status_code == 431
    assert response.json() == {
        "detail": "Request headers are too large",
        "code": "HEADERS_TOO_LARGE",
    }
    assert response.headers["x-content-type-options"] == "nosniff"


# --- a failure outside FastAPI ------------------------------------------------------------


async def test_a_failure_outside_fastapi_is_a_500_in_the_error_body() -> None:
    """The edge answers for a layer in front of FastAPI that fails before responding
    (FastAPI renders its own errors), without the cause, and lets the server log it."""
    from starlette.types import Message, Receive, Scope, Send

    from taskapi.middleware import EdgeMiddleware

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("secret detail")

    edge = EdgeMiddleware(failing, max_body_bytes=1024)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}
    with pytest.raises(RuntimeError):
        await edge(scope, receive, send)
    assert sent[0]["status"] == 500
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert b"x-request-id" in headers
    body = json.loads(sent[1]["body"])
    assert body == {"detail": "Internal server error", "code": "INTERNAL_ERROR"}
