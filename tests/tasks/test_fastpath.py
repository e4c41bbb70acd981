"""The tasks fast path answers exactly as FastAPI does: the same request, the same answer.

Two apps share one database: one with `TASKS_FAST_PATH` on, one with it off. Every test
sends the same request through both and compares status, body and headers. Reads are
compared byte for byte; a write goes to twin tasks (created identically, one per path)
and is compared once ids and timestamps are normalised. `test_the_fast_path_is_taken`
proves the fast path really answers the valid requests, so the comparisons cannot pass
by both sides silently running FastAPI.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from taskapi.app import create_app
from taskapi.config import Settings
from taskapi.tasks.contract import MAX_TASK_ID, Cursor
from taskapi.tasks.fastpath import Handler, TasksFastPath
from tests.conftest import make_settings
from tests.support.tasks import create
from tests.support.tokens import auth, make_token

TASKS = "/api/v1/tasks"
ALICE = auth("alice")
BOB = auth("bob")
STALE = {"If-Match": '"1"'}  # the seed task has been written since
HUGE = 10**9  # rate limits that never refuse, so only their headers are compared

# Differ between any two requests, whichever path answers them. `ratelimit` holds the
# remaining count of each app's own limiter; its presence is still compared.
UNCOMPARED_HEADERS = frozenset({"x-request-id", "date", "ratelimit"})

SEED: dict[str, Any] = {
    "title": "seed",
    "description": "a description",
    "priority": "high",
    "due_date": "2030-01-01T00:00:00Z",
}


# --- the two paths ---------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    fast: httpx.AsyncClient
    slow: httpx.AsyncClient


def path_settings(database_url: str, backend: str, *, fast: bool, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "tasks_fast_path": fast,
        "rate_limit_enabled": True,
        "rate_limit_per_minute": HUGE,
        "rate_limit_burst": HUGE,
        "rate_limit_anonymous_per_minute": HUGE,
        **overrides,
    }
    return make_settings(database_url, **values)


@asynccontextmanager
async def open_paths(database_url: str, backend: str, **overrides: Any) -> AsyncIterator[Paths]:
    """A client with the fast path on and one with it off, on the same database."""
    fast_app: FastAPI = create_app(path_settings(database_url, backend, fast=True, **overrides))
    slow_app: FastAPI = create_app(path_settings(database_url, backend, fast=False, **overrides))
    async with (
        LifespanManager(fast_app),
        LifespanManager(slow_app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=fast_app), base_url="http://testserver"
        ) as fast,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=slow_app), base_url="http://testserver"
        ) as slow,
    ):
        yield Paths(fast, slow)


@pytest.fixture
async def paths(database_url: str, backend: str) -> AsyncIterator[Paths]:
    async with open_paths(database_url, backend) as both:
        yield both


@pytest.fixture
def serve_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`METHOD path` of each request `TasksFastPath._serve` answers."""
    calls: list[str] = []
    original = TasksFastPath._serve

    async def counting(scope: Scope, receive: Receive, send: Send, handler: Handler) -> None:
        calls.append(f"{scope['method']} {scope['path']}")
        await original(scope, receive, send, handler)

    monkeypatch.setattr(TasksFastPath, "_serve", staticmethod(counting))
    return calls


# --- helpers -----------------------------------------------------------------------------


async def twins(
    paths: Paths, headers: dict[str, str] = ALICE, **body: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two tasks created identically: one for each path to write to."""
    return await create(paths.slow, headers, **body), await create(paths.slow, headers, **body)


_ID = re.compile(rb'"id":\d+')
_TIMESTAMP = re.compile(rb'"(created_at|updated_at|completed_at)":"[^"]*"')
_LOCATION = re.compile(rf"^{re.escape(TASKS)}/\d+$")


def view(response: httpx.Response, *, write: bool = False) -> dict[str, Any]:
    """What must be equal on both paths; for a write, without ids and timestamps."""
    headers = sorted(
        (name, value)
        for name, value in response.headers.multi_items()
        if name not in UNCOMPARED_HEADERS
    )
    body = response.content
    if write:
        # Compact JSON: a `"id":` inside a string would be escaped (`\"id\":`) and not match.
        body = _TIMESTAMP.sub(rb'"\1":"T"', _ID.sub(b'"id":ID', body))
        # The length varies with the digits of the id and the timestamps.
        headers = [
            (name, f"{TASKS}/ID" if name == "location" and _LOCATION.match(value) else value)
            for name, value in headers
            if name != "content-length"
        ]
        if "content-length" in response.headers:
            length = int(response.headers["content-length"]) == len(response.content)
            headers.append(("content-length", "matches" if length else "WRONG"))
    return {
        "status": response.status_code,
        "headers": headers,
        "ratelimit": "ratelimit" in response.headers,
        "body": body,
    }


def assert_same(fast: httpx.Response, slow: httpx.Response, *, write: bool = False) -> None:
    assert view(fast, write=write) == view(slow, write=write), (
        f"{fast.request.method} {fast.request.url}\n"
        f"fast: {fast.status_code} {fast.headers} {fast.content!r}\n"
        f"slow: {slow.status_code} {slow.headers} {slow.content!r}"
    )


async def same_read(paths: Paths, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send one read through both paths; they must answer identically."""
    fast = await paths.fast.request(method, url, **kwargs)
    slow = await paths.slow.request(method, url, **kwargs)
    assert_same(fast, slow)
    return fast


async def same_write(
    paths: Paths, method: str, fast_url: str, slow_url: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    """Send one write through each path (to its own twin); equal but for ids and times."""
    fast = await paths.fast.request(method, fast_url, **kwargs)
    slow = await paths.slow.request(method, slow_url, **kwargs)
    assert_same(fast, slow, write=True)
    return fast, slow


async def assert_twins_equal(paths: Paths, fast_id: int, slow_id: int) -> None:
    """What each path stored, read back through FastAPI, is the same."""
    fast = await paths.slow.get(f"{TASKS}/{fast_id}", headers=ALICE)
    slow = await paths.slow.get(f"{TASKS}/{slow_id}", headers=ALICE)
    assert_same(fast, slow, write=True)


# --- reads -------------------------------------------------------------------------------


async def test_get_by_id_is_the_same(paths: Paths) -> None:
    task = await create(paths.slow, **SEED)
    bobs = await create(paths.slow, BOB, title="bob's")
    for task_id, headers in [
        (task["id"], ALICE),
        (task["id"], BOB),  # someone else's: 404
        (bobs["id"], ALICE),
        (bobs["id"], BOB),
        (task["id"] + 10_000, ALICE),  # missing
        (MAX_TASK_ID, ALICE),
        (1, ALICE),
    ]:
        response = await same_read(paths, "GET", f"{TASKS}/{task_id}", headers=headers)
        assert response.status_code in (200, 404)
    response = await same_read(paths, "GET", f"{TASKS}/{task['id']}", headers=ALICE)
    assert response.json() == task


async def test_lists_are_the_same(paths: Paths) -> None:
    ids = []
    for i in range(7):
        body: dict[str, Any] = {
            "title": f"t{i} ✓",
            "priority": ["low", "medium", "high", None][i % 4],
        }
        if i % 3 == 0:
            body["due_date"] = f"203{i}-06-0{i + 1}T12:00:00+02:00"
        task = await create(paths.slow, **body)
        if i % 2:
            await paths.slow.put(f"{TASKS}/{task['id']}", json={"completed": True}, headers=ALICE)
        ids.append(task["id"])
    await create(paths.slow, BOB, title="bob's", priority="high")
    queries = [
        "",
        "?completed=true",
        "?completed=false",
        "?priority=low",
        "?priority=medium",
        "?priority=high",
        "?limit=1",
        "?limit=3",
        "?limit=7",
        "?limit=500",
        "?completed=false&priority=high&limit=1",
        "?limit=2&completed=true",
        f"?cursor={Cursor.encode(ids[0])}",
        f"?cursor={Cursor.encode(0)}",
        f"?limit=2&cursor={Cursor.encode(ids[2])}",
        f"?cursor={Cursor.encode(MAX_TASK_ID)}",
        f"?priority=low&cursor={Cursor.encode(ids[0])}&limit=1",
        # Handed to FastAPI by the fast path, but not errors:
        "?unknown=1",
        "?limit=2&foo=bar",
        "?completed=1",
        "?completed=True",
        "?priority=high&priority=low",
        "?limit=010",
        "?limit=2&limit=3",
        f"?cursor={Cursor.encode(ids[0])}&cursor={Cursor.encode(ids[3])}",
    ]
    for query in queries:
        for headers in (ALICE, BOB):
            response = await same_read(paths, "GET", f"{TASKS}{query}", headers=headers)
            assert response.status_code == 200, (query, response.text)
    trailing = await same_read(paths, "GET", f"{TASKS}/?limit=2", headers=ALICE)
    assert "link" in trailing.headers


async def test_pages_are_the_same_following_the_link_header(paths: Paths) -> None:
    for i in range(7):
        await create(paths.slow, title=f"t{i}", priority="high" if i % 2 else "low")
    for start in (
        "?limit=2",
        "?priority=high&limit=1",
        "?completed=false&limit=3",
        "?limit=3&foo=bar",  # kept in the Link; every page goes to FastAPI
    ):
        url: str | None = f"{TASKS}{start}"
        pages = 0
        while url is not None:
            response = await same_read(paths, "GET", url, headers=ALICE)
            assert response.status_code == 200
            link = response.headers.get("link")
            url = link.split(";")[0].strip("<>") if link else None
            pages += 1
        assert pages > 1, start


# --- writes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"title": "minimal"},
        {
            "title": "full",
            "description": "d",
            "completed": True,
            "priority": "medium",
            "due_date": "2026-02-10T05:30:00+05:30",
        },
        {"title": "nulls", "description": None, "priority": None, "due_date": None},
        {"title": "read-only ignored", "id": 4242, "user_id": "bob", "created_at": "2000-01-01"},
        {"title": 'émoji 🎉 "quoted" \\ \t\n\u2028', "description": "\x7f\u0085 ok"},
        {"title": "t" * 200, "description": "d" * 10_000},
    ],
)
async def test_creates_are_the_same(paths: Paths, body: dict[str, Any]) -> None:
    fast, slow = await same_write(paths, "POST", TASKS, TASKS, json=body, headers=ALICE)
    assert fast.status_code == 201
    assert fast.headers["location"] == f"{TASKS}/{fast.json()['id']}"
    await assert_twins_equal(paths, fast.json()["id"], slow.json()["id"])


@pytest.mark.parametrize(
    "changes",
    [
        {"completed": True},
        {"title": "renamed"},
        {"priority": "low", "due_date": "2031-01-01T00:00:00"},
        {"description": None},
        {"priority": None},
        {"due_date": None},
        {"description": None, "priority": None, "due_date": None},
        {},
        {"unknown": "ignored", "id": 1, "user_id": "bob"},
    ],
)
async def test_updates_are_the_same(paths: Paths, changes: dict[str, Any]) -> None:
    fast_task, slow_task = await twins(paths, **SEED)
    fast, _ = await same_write(
        paths,
        "PUT",
        f"{TASKS}/{fast_task['id']}",
        f"{TASKS}/{slow_task['id']}",
        json=changes,
        headers=ALICE,
    )
    assert fast.status_code == 200, fast.text
    await assert_twins_equal(paths, fast_task["id"], slow_task["id"])


async def test_a_task_read_can_be_put_back_the_same(paths: Paths) -> None:
    """Read-only fields sent back (each path its own task's) are ignored by both."""
    fast_task, slow_task = await twins(paths, **SEED)
    fast = await paths.fast.put(
        f"{TASKS}/{fast_task['id']}", json={**fast_task, "title": "again"}, headers=ALICE
    )
    slow = await paths.slow.put(
        f"{TASKS}/{slow_task['id']}", json={**slow_task, "title": "again"}, headers=ALICE
    )
    assert_same(fast, slow, write=True)
    assert fast.status_code == 200
    assert fast.json()["created_at"] == fast_task["created_at"]
    # The same body sent to the other twin: its id, timestamps and owner are still ignored.
    fast, _ = await same_write(
        paths,
        "PUT",
        f"{TASKS}/{fast_task['id']}",
        f"{TASKS}/{slow_task['id']}",
        json={**slow_task, "user_id": "bob", "title": "crossed"},
        headers=ALICE,
    )
    assert fast.json()["id"] == fast_task["id"]
    await assert_twins_equal(paths, fast_task["id"], slow_task["id"])


async def test_updates_of_others_and_missing_tasks_are_the_same_404(paths: Paths) -> None:
    fast_task, slow_task = await twins(paths, BOB, **SEED)
    for fast_url, slow_url in [
        (f"{TASKS}/{fast_task['id']}", f"{TASKS}/{slow_task['id']}"),
        (f"{TASKS}/{slow_task['id'] + 10_000}", f"{TASKS}/{slow_task['id'] + 10_000}"),
        (f"{TASKS}/{MAX_TASK_ID}", f"{TASKS}/{MAX_TASK_ID}"),
    ]:
        fast, _ = await same_write(
            paths, "PUT", fast_url, slow_url, json={"title": "stolen"}, headers=ALICE
        )
        assert fast.status_code == 404
    fast = await paths.slow.get(f"{TASKS}/{fast_task['id']}", headers=BOB)
    assert fast.json()["title"] == "seed"
    await assert_twins_equal_for(paths, BOB, fast_task["id"], slow_task["id"])


async def assert_twins_equal_for(
    paths: Paths, headers: dict[str, str], fast_id: int, slow_id: int
) -> None:
    fast = await paths.slow.get(f"{TASKS}/{fast_id}", headers=headers)
    slow = await paths.slow.get(f"{TASKS}/{slow_id}", headers=headers)
    assert fast.status_code == 200
    assert_same(fast, slow, write=True)


async def test_deletes_are_the_same(paths: Paths) -> None:
    fast_task, slow_task = await twins(paths, **SEED)
    fast_url, slow_url = f"{TASKS}/{fast_task['id']}", f"{TASKS}/{slow_task['id']}"
    fast, _ = await same_write(paths, "DELETE", fast_url, slow_url, headers=BOB)
    assert fast.status_code == 404  # someone else's
    fast, _ = await same_write(paths, "DELETE", fast_url, slow_url, headers=ALICE)
    assert (fast.status_code, fast.content) == (204, b"")
    fast, _ = await same_write(paths, "DELETE", fast_url, slow_url, headers=ALICE)
    assert fast.status_code == 404  # gone
    await same_read(paths, "GET", fast_url, headers=ALICE)
    await same_read(paths, "GET", slow_url, headers=ALICE)
    missing = f"{TASKS}/{slow_task['id'] + 10_000}"
    fast, _ = await same_write(paths, "DELETE", missing, missing, headers=ALICE)
    assert fast.status_code == 404


# --- errors ------------------------------------------------------------------------------

BAD_AUTH: dict[str, dict[str, str]] = {
    "missing": {},
    "basic": {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
    "bearer-no-token": {"Authorization": "Bearer"},
    "bearer-blank": {"Authorization": "Bearer    "},
    "bearer-two-tokens": {"Authorization": "Bearer a b"},
    "garbage": {"Authorization": "garbage"},
    "not-a-jwt": {"Authorization": "Bearer not-a-jwt"},
    "three-parts": {"Authorization": "Bearer a.b.c"},
    "wrong-secret": auth("alice", secret="another-secret-0123456789abcdef0123456789ab"),
    "expired": {"Authorization": f"Bearer {make_token('alice', ttl=-3600)}"},
    "no-sub": {"Authorization": f"Bearer {make_token(None)}"},
    "too-large": {"Authorization": "Bearer " + "a" * 9000},
}


@pytest.mark.parametrize("headers", list(BAD_AUTH.values()), ids=list(BAD_AUTH))
async def test_authentication_errors_are_the_same(paths: Paths, headers: dict[str, str]) -> None:
    task = await create(paths.slow, **SEED)
    one = f"{TASKS}/{task['id']}"
    for method, url, body in [
        ("GET", one, None),
        ("GET", f"{TASKS}?limit=2", None),
        ("POST", TASKS, {"title": "x"}),
        ("PUT", one, {"title": "x"}),
        ("DELETE", one, None),
        ("GET", f"{TASKS}/abc", None),  # FastAPI's own: 401 before 422
    ]:
        response = await same_read(paths, method, url, json=body, headers=headers)
        assert response.status_code == 401, (method, url, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await paths.slow.get(one, headers=ALICE)).json() == task


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "url", "content", "content_type"),
    [
        ("GET", "/abc", None, None),
        ("GET", "/0", None, None),
        ("GET", "/-1", None, None),
        ("GET", "/1.5", None, None),
        ("GET", "/007", None, None),
        ("GET", f"/{2**63}", None, None),
        ("GET", f"/{2**64 + 5}", None, None),
        ("PUT", "/abc", b'{"title": "x"}', "application/json"),
        ("PUT", "/0", b'{"title": "x"}', "application/json"),
        ("PUT", f"/{2**63}", b'{"title": "x"}', "application/json"),
        ("DELETE", "/abc", None, None),
        ("DELETE", "/0", None, None),
        ("DELETE", f"/{2**63}", None, None),
        ("GET", "?limit=0", None, None),
        ("GET", "?limit=501", None, None),
        ("GET", "?limit=-1", None, None),
        ("GET", "?limit=x", None, None),
        ("GET", "?limit=", None, None),
        ("GET", "?completed=maybe", None, None),
        ("GET", "?completed=", None, None),
        ("GET", "?priority=urgent", None, None),
        ("GET", "?priority=HIGH", None, None),
        ("GET", "?cursor=not-a-cursor", None, None),
        ("GET", "?cursor=" + "A" * 65, None, None),
        ("GET", f"?cursor={Cursor.encode(1)[:-1]}!", None, None),
        ("GET", "?cursor=", None, None),
        ("POST", "", b"{", "application/json"),
        ("POST", "", b"", "application/json"),
        ("POST", "", b"null", "application/json"),
        ("POST", "", b"[]", "application/json"),
        ("POST", "", b'"title"', "application/json"),
        ("POST", "", b'{"title": "\xff"}', "application/json"),
        ("POST", "", b"[" * 10_000 + b"]" * 10_000, "application/json"),
        ("POST", "", b'{"title": "x"}', "text/plain"),
        ("POST", "", b"title=x", "application/x-www-form-urlencoded"),
        ("POST", "", b'{"title": "x"}', "application/xml"),
        ("POST", "", b'{"title": "x"}', "application/a/b+json"),
        ("POST", "", b"{}", "application/json"),
        ("POST", "", b'{"title": ""}', "application/json"),
        ("POST", "", b'{"title": "   \\t "}', "application/json"),
        ("POST", "", b'{"title": 5}', "application/json"),
        ("POST", "", b'{"title": "x", "completed": 1}', "application/json"),
        ("POST", "", b'{"title": "x", "completed": "true"}', "application/json"),
        ("POST", "", b'{"title": "x", "priority": "urgent"}', "application/json"),
        ("POST", "", b'{"title": "x", "due_date": 0}', "application/json"),
        ("POST", "", b'{"title": "x", "due_date": "tuesday"}', "application/json"),
        ("POST", "", b'{"title": "x\\u0000"}', "application/json"),
        ("POST", "", b'{"title": "bad \\ud800"}', "application/json"),
        ("POST", "", b'{"title": "x", "description": NaN}', "application/json"),
        ("PUT", "/{id}", b"{", "application/json"),
        ("PUT", "/{id}", b'{"title": "x"}', "text/plain"),
        ("PUT", "/{id}", b'{"title": null}', "application/json"),
        ("PUT", "/{id}", b'{"completed": null}', "application/json"),
        ("PUT", "/{id}", b'{"completed": 1}', "application/json"),
        ("PUT", "/{id}", b'{"title": " "}', "application/json"),
        ("PUT", "/{id}", b'{"due_date": "1700000000"}', "application/json"),
        ("PUT", "/{id}", b"[1]", "application/json"),
        ("HEAD", "/{id}", None, None),
        ("HEAD", "", None, None),
        ("PATCH", "/{id}", b'{"title": null}', "application/merge-patch+json"),
        ("PATCH", "/{id}", b'{"title": "x"}', "text/plain"),
        ("POST", "/{id}", b'{"title": "x"}', "application/json"),
        ("DELETE", "", None, None),
        ("PUT", "", b'{"title": "x"}', "application/json"),
        ("GET", "/{id}/more", None, None),
        ("GET", "x", None, None),
    ],
)
async def test_input_errors_the_fast_path_hands_over_are_the_same(
    paths: Paths, method: str, url: str, content: bytes | None, content_type: str | None
) -> None:
    task = await create(paths.slow, **SEED)
    headers = {**ALICE, **({"Content-Type": content_type} if content_type is not None else {})}
    target = f"{TASKS}{url.replace('{id}', str(task['id']))}"
    response = await same_read(paths, method, target, content=content, headers=headers)
    assert response.status_code != 500, response.text
    if method not in ("GET", "HEAD"):
        assert response.status_code >= 400, response.text
    assert (await paths.slow.get(f"{TASKS}/{task['id']}", headers=ALICE)).json() == task


async def test_rate_limited_answers_are_the_same(database_url: str, backend: str) -> None:
    """A bucket of one: the first request passes, the next is a 429 with Retry-After."""
    async with open_paths(
        database_url,
        backend,
        rate_limit_per_minute=60,
        rate_limit_burst=1,
        rate_limit_anonymous_per_minute=60,
    ) as paths:
        owner = auth("carol")
        task = await create(paths.slow, owner, **SEED)
        one = f"{TASKS}/{task['id']}"
        for user, method, url, body in [
            ("dave", "GET", one, None),
            ("erin", "GET", f"{TASKS}?limit=1", None),
            ("frank", "POST", TASKS, {"title": "x"}),
            ("grace", "PUT", one, {"title": "x"}),
            ("heidi", "DELETE", one, None),
            ("ivan", "GET", f"{TASKS}/abc", None),
        ]:
            headers = auth(user)
            for client in (paths.fast, paths.slow):  # each app's own first request
                first = await client.request(method, url, json=body, headers=headers)
                assert first.status_code in (200, 201, 404, 422), first.text
            response = await same_read(paths, method, url, json=body, headers=headers)
            assert response.status_code == 429, (method, url, response.text)
            assert response.headers["retry-after"] == "1"
        for client in (paths.fast, paths.slow):
            assert (await client.get(one)).status_code == 401
        response = await same_read(paths, "GET", one)
        assert response.status_code == 429


# Forms this module found read differently by the two paths, all fixed (a missing
# Content-Type is JSON for both; a media type with two "/" is not JSON for either; the
# first of repeated Content-Type or Authorization headers counts, as Starlette reads it).
@pytest.mark.parametrize(
    ("method", "headers"),
    [
        pytest.param(
            "POST",
            [("authorization", ALICE["Authorization"])],
            id="post-without-content-type",
        ),
        pytest.param(
            "PUT",
            [("authorization", ALICE["Authorization"])],
            id="put-without-content-type",
        ),
        pytest.param(
            "POST",
            [
                ("authorization", ALICE["Authorization"]),
                ("content-type", "application/a/b+json"),
            ],
            id="two-slash-json-media-type",
        ),
        pytest.param(
            "POST",
            [
                ("authorization", ALICE["Authorization"]),
                ("content-type", "text/plain"),
                ("content-type", "application/json"),
            ],
            id="repeated-content-type",
        ),
        pytest.param(
            "GET",
            [("authorization", BOB["Authorization"]), ("authorization", ALICE["Authorization"])],
            id="repeated-authorization",
        ),
    ],
)
async def test_ambiguous_header_forms_are_the_same(
    paths: Paths, method: str, headers: list[tuple[str, str]]
) -> None:
    fast_task, slow_task = await twins(paths, **SEED)
    if method == "POST":
        urls = (TASKS, TASKS)
    elif method == "PUT":  # a write: each path's own twin
        urls = (f"{TASKS}/{fast_task['id']}", f"{TASKS}/{slow_task['id']}")
    else:  # a read: the same task through both
        urls = (f"{TASKS}/{fast_task['id']}", f"{TASKS}/{fast_task['id']}")
    results = []
    for client, url in zip((paths.fast, paths.slow), urls, strict=True):
        request = client.build_request(
            method, url, content=b'{"title": "x"}' if method != "GET" else None
        )
        kept = [(k, v) for k, v in request.headers.multi_items() if k != "content-type"]
        request.headers = httpx.Headers(kept + headers)
        results.append(await client.send(request))
    assert_same(*results, write=method != "GET")


# --- the fast path is really taken -------------------------------------------------------


async def test_the_fast_path_is_taken(paths: Paths, serve_calls: list[str]) -> None:
    task = await create(paths.slow, **SEED)
    one = f"{TASKS}/{task['id']}"

    async def fast_answers(send: Callable[[], Awaitable[httpx.Response]], status: int) -> None:
        serve_calls.clear()
        response = await send()
        assert response.status_code == status, response.text
        assert len(serve_calls) == 1, serve_calls

    async def fastapi_answers(send: Callable[[], Awaitable[httpx.Response]]) -> None:
        serve_calls.clear()
        await send()
        assert serve_calls == []

    def valid(client: httpx.AsyncClient) -> list[tuple[Callable[[], Awaitable[Any]], int]]:
        return [
            (lambda: client.get(one, headers=ALICE), 200),
            (lambda: client.get(f"{TASKS}/{task['id'] + 10_000}", headers=ALICE), 404),
            (lambda: client.get(one, headers=BOB), 404),
            (lambda: client.get(one), 401),
            (lambda: client.get(TASKS, headers=ALICE), 200),
            (lambda: client.get(f"{TASKS}?limit=1&completed=false", headers=ALICE), 200),
            (lambda: client.get(f"{TASKS}/", headers=ALICE), 200),
            (lambda: client.post(TASKS, json={"title": "fast"}, headers=ALICE), 201),
            (lambda: client.put(one, json={"completed": True}, headers=ALICE), 200),
            (lambda: client.put(one, json={"description": None}, headers=ALICE), 200),
            (lambda: client.patch(one, json={"priority": None}, headers=ALICE), 200),
            (lambda: client.head(one, headers=ALICE), 200),
            (lambda: client.get(one, headers={**ALICE, "If-None-Match": "*"}), 304),
            (
                lambda: client.put(one, json={"title": "t"}, headers={**ALICE, "If-Match": '"1"'}),
                412,
            ),
            (lambda: client.get(f"{TASKS}/changes", headers=ALICE), 200),
            (lambda: client.get(f"{TASKS}/changes?limit=1", headers=ALICE), 200),
        ]

    for send, status in valid(paths.fast):
        await fast_answers(send, status)
    doomed = await create(paths.slow)
    await fast_answers(lambda: paths.fast.delete(f"{TASKS}/{doomed['id']}", headers=ALICE), 204)

    for send in [
        lambda: paths.fast.get(f"{TASKS}/abc", headers=ALICE),
        lambda: paths.fast.get(f"{TASKS}/0", headers=ALICE),
        lambda: paths.fast.get(f"{TASKS}?limit=0", headers=ALICE),
        lambda: paths.fast.get(f"{TASKS}?unknown=1", headers=ALICE),
        lambda: paths.fast.post(TASKS, json={"title": ""}, headers=ALICE),
        lambda: paths.fast.put(one, json={"completed": 1}, headers=ALICE),
        lambda: paths.fast.put(one, content=b"{", headers={**ALICE, **JSON}),
        lambda: paths.fast.patch(one, json={"title": None}, headers=ALICE),
        lambda: paths.fast.put(one, json={"title": "x"}, headers={**ALICE, "If-Match": "3"}),
        lambda: paths.fast.get(f"{TASKS}/changes?since=a&since=b", headers=ALICE),
        lambda: paths.fast.get(f"{TASKS}/changes?limit=0", headers=ALICE),
        lambda: paths.fast.get("/health", headers=ALICE),
    ]:
        await fastapi_answers(send)

    # With the fast path off, it is never used.
    for send, status in valid(paths.slow):
        serve_calls.clear()
        assert (await send()).status_code == status
        assert serve_calls == []
    doomed = await create(paths.slow)
    await fastapi_answers(lambda: paths.slow.delete(f"{TASKS}/{doomed['id']}", headers=ALICE))


# --- any request -------------------------------------------------------------------------

# Weighted (by repetition) towards what the fast path takes, with every kind of miss.
METHODS = ("GET",) * 4 + ("POST",) * 3 + ("PUT",) * 4 + ("DELETE",) * 2 + ("HEAD", "PATCH")
TARGETS = ("collection",) * 3 + ("alice",) * 4 + ("bob", "unused", "text")
ID_FORMS = ("{}",) * 8 + ("0{}", "+{}", "-{}", " {}", "{}.0", "{}/", "{}x")

# Ids no task has (ids are small here), so a write to one cannot touch a twin.
unused_ids = (
    st.integers(-3, 0)
    | st.integers(10**12, MAX_TASK_ID)
    | st.integers(MAX_TASK_ID - 2, MAX_TASK_ID + 2)
    | st.integers(2**64 - 2, 2**64 + 2)
)
# Path text with no digit, so it can never name an existing task.
path_texts = st.text(st.characters(exclude_categories=("Nd", "Cs")), min_size=1, max_size=8)

valid_query_values: dict[str, st.SearchStrategy[str]] = {
    "completed": st.sampled_from(["true", "false"]),
    "priority": st.sampled_from(["low", "medium", "high"]),
    "limit": st.integers(1, 3).map(str) | st.sampled_from(["100", "500"]),
    "cursor": st.integers(0, 300).map(Cursor.encode),
}
invalid_query_values: dict[str, st.SearchStrategy[str]] = {
    "completed": st.sampled_from(["1", "0", "True", "yes", "", "maybe"]),
    "priority": st.sampled_from(["HIGH", "urgent", ""]),
    "limit": st.sampled_from(["0", "501", "-1", "010", "+5", "x", ""])
    | st.integers(-5, 600).map(str),
    "cursor": st.sampled_from(["not-a-cursor", "A" * 65, "", Cursor.encode(MAX_TASK_ID), "aWQ6"])
    | st.text(max_size=8),
}
query_pairs = st.sampled_from(sorted(valid_query_values)).flatmap(
    lambda name: st.tuples(st.just(name), valid_query_values[name])
)
odd_query_pairs = (
    st.sampled_from(sorted(invalid_query_values)).flatmap(
        lambda name: st.tuples(st.just(name), invalid_query_values[name])
    )
    | st.tuples(st.sampled_from(["unknown", "Limit", "cursor[]", ""]), st.text(max_size=5))
    | query_pairs  # a repeated known parameter
)
queries = st.lists(query_pairs, max_size=3, unique_by=lambda pair: pair[0]) | st.lists(
    query_pairs | odd_query_pairs, max_size=4
)

valid_titles = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12
).filter(str.strip) | st.sampled_from(["ok", "x" * 200, "émoji 🎉", 'quote " \\'])
titles = valid_titles | st.sampled_from(["", "  ", "\t\n", "x" * 201, "nul\x00"])
valid_due_dates = st.none() | st.sampled_from(
    [
        "2026-02-10T00:00:00Z",
        "2026-02-10T05:30:00+05:30",
        "2026-02-10T00:00:00",
        "2026-02-10T00:00:00.123456Z",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
    ]
)
valid_fields: dict[str, st.SearchStrategy[Any]] = {
    "title": valid_titles,
    "description": st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00")),
    "completed": st.booleans(),
    "priority": st.none() | st.sampled_from(["low", "medium", "high"]),
    "due_date": valid_due_dates,
}
wrong_fields: dict[str, st.SearchStrategy[Any]] = {
    "title": titles | st.none() | st.integers() | st.lists(st.text(max_size=2), max_size=2),
    "description": st.integers() | st.just("x" * 10_001) | st.just("nul\x00"),
    "completed": st.sampled_from([1, 0, "true", "yes", None]),
    "priority": st.sampled_from(["urgent", "LOW", 1]),
    "due_date": st.sampled_from(
        [0, 1.5, "", True, "next tuesday", "1700000000", "0001-01-01T00:00:00+01:00"]
    ),
    "id": st.integers(),
    "user_id": st.just("bob"),
    "created_at": st.just("2000-01-01T00:00:00Z"),
}
# Each field valid or wrong, independently.
mixed_fields = {
    name: valid_fields.get(name, st.nothing()) | wrong_fields.get(name, st.nothing())
    for name in {**valid_fields, **wrong_fields}
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
without_title = {name: value for name, value in valid_fields.items() if name != "title"}
json_bodies = st.one_of(
    st.fixed_dictionaries({"title": valid_titles}, optional=without_title),  # TaskCreate
    st.fixed_dictionaries({}, optional=valid_fields),  # TaskUpdate
    st.fixed_dictionaries({}, optional=mixed_fields),
    json_values,
).map(lambda value: json.dumps(value).encode())
raw_bodies = st.sampled_from(
    [b"", b"{", b"null", b'{"title": "\xff"}', b"title=x", b'{"title": "a"}{}', b"[" * 3000]
) | st.binary(max_size=20)
bodies = st.one_of(json_bodies, json_bodies, st.none(), raw_bodies)

CONTENT_TYPES = ("application/json",) * 6 + (
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/merge-patch+json",
    "application/+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/xml",
    "application/a/b+json",
    "",
)
AUTHS: dict[str, str | None] = {
    "alice": ALICE["Authorization"],
    "bob": BOB["Authorization"],
    "none": None,
    "garbage": "Bearer garbage",
}
AUTH_NAMES = ("alice",) * 5 + ("bob", "none", "garbage")


@dataclass(frozen=True)
class Call:
    method: str
    target: str  # "collection", "alice", "bob", "unused" or "text"
    id_form: str
    unused_id: int
    text: str
    trailing_slash: bool
    query: list[tuple[str, str]]
    body: bytes | None
    content_type: str | None
    auth: str


@st.composite
def calls(draw: st.DrawFn) -> Call:
    body = draw(bodies)
    content_types: st.SearchStrategy[str | None] = st.none() | st.sampled_from(CONTENT_TYPES)
    return Call(
        method=draw(st.sampled_from(METHODS)),
        target=draw(st.sampled_from(TARGETS)),
        id_form=draw(st.sampled_from(ID_FORMS)),
        unused_id=draw(unused_ids),
        text=draw(path_texts),
        trailing_slash=draw(st.sampled_from([False, False, False, True])),
        query=draw(queries),
        body=body,
        content_type=draw(content_types),
        auth=draw(st.sampled_from(AUTH_NAMES)),
    )


async def request_both(paths: Paths, call: Call) -> tuple[httpx.Response, httpx.Response]:
    """Send `call` through each path; a write goes to each path's own twin."""
    write = call.method not in ("GET", "HEAD")
    ids: tuple[int | str, int | str]
    if call.target in ("alice", "bob"):
        owner = ALICE if call.target == "alice" else BOB
        fast_task = await create(paths.slow, owner, **SEED)
        slow_task = await create(paths.slow, owner, **SEED) if write else fast_task
        ids = (fast_task["id"], slow_task["id"])
    else:
        ids = (call.unused_id, call.unused_id)
    headers = {}
    if AUTHS[call.auth] is not None:
        headers["Authorization"] = str(AUTHS[call.auth])
    if call.content_type is not None:
        headers["Content-Type"] = call.content_type
    query = f"?{urlencode(call.query)}" if call.query else ""
    responses = []
    for client, task_id in zip((paths.fast, paths.slow), ids, strict=True):
        if call.target == "collection":
            path = TASKS + ("/" if call.trailing_slash else "")
        elif call.target == "text":
            path = f"{TASKS}/{quote(call.text, safe='')}"
        else:
            path = f"{TASKS}/{quote(call.id_form.format(task_id), safe='')}"
        note(f"{'fast' if client is paths.fast else 'slow'}: {call.method} {path}{query}")
        responses.append(
            await client.request(call.method, path + query, content=call.body, headers=headers)
        )
    return responses[0], responses[1]


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=calls())
async def test_any_request_gets_the_same_answer(
    paths: Paths, serve_calls: list[str], call: Call
) -> None:
    note(repr(call))
    serve_calls.clear()
    fast, slow = await request_both(paths, call)
    # The twins are created through FastAPI, so only the request itself can be served.
    event("fast path" if serve_calls else "FastAPI")
    event(f"{call.method} {fast.status_code}")
    note(f"fast: {fast.status_code} {fast.content[:300]!r}")
    note(f"slow: {slow.status_code} {slow.content[:300]!r}")
    write = call.method not in ("GET", "HEAD")
    assert view(fast, write=write) == view(slow, write=write)
    assert fast.status_code != 500
