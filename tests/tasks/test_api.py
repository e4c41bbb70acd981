"""Task endpoints through HTTP: the contract's semantics, validation and pagination."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.tasks import create
from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
ALICE = auth("alice")
BOB = auth("bob")


async def test_create_returns_201_with_location_and_full_task(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TASKS,
        json={
            "title": "Write docs",
            "description": "API docs",
            "priority": "high",
            "due_date": "2026-02-10T00:00:00Z",
        },
        headers=ALICE,
    )
    assert response.status_code == 201
    task = response.json()
    assert response.headers["location"] == f"{TASKS}/{task['id']}"
    assert task["title"] == "Write docs"
    assert task["description"] == "API docs"
    assert task["priority"] == "high"
    assert task["completed"] is False
    assert task["due_date"] == "2026-02-10T00:00:00Z"
    assert task["user_id"] == "alice"
    assert task["created_at"].endswith("Z")
    assert task["created_at"] == task["updated_at"]
    assert set(task) == {
        "id",
        "title",
        "description",
        "completed",
        "priority",
        "due_date",
        "list_id",
        "user_id",
        "created_at",
        "updated_at",
        "completed_at",
        "version",
        "labels",
    }
    assert task["list_id"] is None
    assert task["completed_at"] is None
    assert task["version"] == 1
    assert response.headers["etag"] == '"1"'


async def test_get_returns_the_created_task(client: httpx.AsyncClient) -> None:
    task = await create(client, title="read me")
    response = await client.get(f"{TASKS}/{task['id']}", headers=ALICE)
    assert response.status_code == 200
    assert response.json() == task


async def test_missing_and_foreign_tasks_are_indistinguishable(client: httpx.AsyncClient) -> None:
    task = await create(client)
    foreign = await client.get(f"{TASKS}/{task['id']}", headers=BOB)
    missing = await client.get(f"{TASKS}/{task['id'] + 1000}", headers=BOB)
    assert foreign.status_code == missing.status_code == 404
    assert (
        foreign.json()
        == missing.json()
        == {
            "detail": "Task not found or you don't have permission to access it",
            "code": "TASK_NOT_FOUND",
        }
    )


async def test_put_is_partial_and_advances_updated_at_only(client: httpx.AsyncClient) -> None:
    task = await create(
        client, title="t", description="d", priority="low", due_date="2030-01-01T00:00:00Z"
    )
    response = await client.put(f"{TASKS}/{task['id']}", json={"completed": True}, headers=ALICE)
    assert response.status_code == 200
    updated = response.json()
    assert updated["completed"] is True
    for field in ("title", "description", "priority", "due_date", "created_at", "user_id", "id"):
        assert updated[field] == task[field], field
    assert updated["updated_at"] > task["updated_at"]


async def test_put_null_clears_optional_fields(client: httpx.AsyncClient) -> None:
    task = await create(client, description="d", priority="high", due_date="2030-01-01T00:00:00Z")
    response = await client.put(
        f"{TASKS}/{task['id']}",
        json={"description": None, "priority": None, "due_date": None},
        headers=ALICE,
    )
    assert response.status_code == 200
    cleared = response.json()
    assert (cleared["description"], cleared["priority"], cleared["due_date"]) == (None,) * 3
    assert cleared["title"] == task["title"]


@pytest.mark.parametrize("field", ["title", "completed"])
async def test_put_null_for_required_fields_is_422(client: httpx.AsyncClient, field: str) -> None:
    task = await create(client)
    response = await client.put(f"{TASKS}/{task['id']}", json={field: None}, headers=ALICE)
    assert response.status_code == 422
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert field in response.json()["detail"]
    assert (await client.get(f"{TASKS}/{task['id']}", headers=ALICE)).json() == task


async def test_read_only_fields_are_ignored_so_get_can_be_put_back(
    client: httpx.AsyncClient,
) -> None:
    task = await create(client, title="round trip", priority="medium")
    sent = {
        **task,
        "id": 999_999,
        "user_id": "bob",
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
        "title": "round trip 2",
    }
    response = await client.put(f"{TASKS}/{task['id']}", json=sent, headers=ALICE)
    assert response.status_code == 200
    updated = response.json()
    assert updated["id"] == task["id"]
    assert updated["user_id"] == "alice"
    assert updated["created_at"] == task["created_at"]
    assert updated["updated_at"] > task["updated_at"]
    assert updated["title"] == "round trip 2"
    assert (await client.get(f"{TASKS}/999999", headers=ALICE)).status_code == 404


async def test_create_ignores_read_only_fields(client: httpx.AsyncClient) -> None:
    task = await create(client, id=424242, user_id="bob", created_at="2000-01-01T00:00:00Z")
    assert task["id"] != 424242
    assert task["user_id"] == "alice"
    assert not task["created_at"].startswith("2000")


async def test_delete_returns_204_and_the_task_is_gone(client: httpx.AsyncClient) -> None:
    task = await create(client)
    response = await client.delete(f"{TASKS}/{task['id']}", headers=ALICE)
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"{TASKS}/{task['id']}", headers=ALICE)).status_code == 404
    again = await client.delete(f"{TASKS}/{task['id']}", headers=ALICE)
    assert (again.status_code, again.json()["code"]) == (404, "TASK_NOT_FOUND")


async def test_deleted_ids_are_never_reused(client: httpx.AsyncClient) -> None:
    first = await create(client)
    await client.delete(f"{TASKS}/{first['id']}", headers=ALICE)
    second = await create(client)
    assert second["id"] > first["id"]


async def test_list_filters_by_completed_and_priority(client: httpx.AsyncClient) -> None:
    a = await create(client, title="a", priority="high")
    b = await create(client, title="b", priority="low")
    c = await create(client, title="c", priority="high")
    await client.put(f"{TASKS}/{c['id']}", json={"completed": True}, headers=ALICE)
    await create(client, BOB, title="bob high", priority="high")

    async def titles(query: str) -> list[str]:
        response = await client.get(f"{TASKS}{query}", headers=ALICE)
        assert response.status_code == 200, response.text
        return [task["title"] for task in response.json()]

    assert await titles("") == ["a", "b", "c"]
    assert await titles("?priority=high") == ["a", "c"]
    assert await titles("?completed=false") == ["a", "b"]
    assert await titles("?completed=true") == ["c"]
    assert await titles("?completed=false&priority=high") == ["a"]
    assert await titles("?priority=medium") == []
    assert a["id"] < b["id"] < c["id"]


@pytest.mark.parametrize(
    "query",
    [
        "?priority=urgent",
        "?completed=maybe",
        "?limit=0",
        "?limit=501",
        "?limit=x",
        "?cursor=not-a-cursor",
        "?cursor=" + "A" * 65,
        # Only plain decimal digits are page sizes (Python's int() would take all these).
        "?limit=5.0",
        "?limit=1_0",
        "?limit=+5",
        "?limit=%205",
        "?limit=5%20",
        "?limit=%EF%BC%95",  # a full-width digit five
    ],
)
async def test_bad_query_values_are_422(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"{TASKS}{query}", headers=ALICE)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert query[1:].split("=")[0] in body["detail"]


async def test_list_pages_follow_the_link_header(client: httpx.AsyncClient) -> None:
    created = [
        await create(client, title=f"t{i}", priority="high" if i % 2 else "low") for i in range(7)
    ]
    seen: list[int] = []
    url: str | None = f"{TASKS}?limit=3"
    pages = 0
    while url is not None:
        response = await client.get(url, headers=ALICE)
        assert response.status_code == 200
        page = response.json()
        assert len(page) <= 3
        seen += [task["id"] for task in page]
        link = response.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else None
        if link:
            assert link.endswith('rel="next"')
        pages += 1
    assert pages == 3
    assert seen == [task["id"] for task in created]

    # The filter is kept in the next link.
    response = await client.get(f"{TASKS}?priority=high&limit=2", headers=ALICE)
    assert "priority=high" in response.headers["link"]
    next_page = await client.get(response.headers["link"].split(";")[0].strip("<>"), headers=ALICE)
    assert [t["priority"] for t in response.json() + next_page.json()] == ["high"] * 3


async def test_a_cursor_never_reveals_other_users_tasks(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await create(client)
    response = await client.get(f"{TASKS}?limit=1", headers=ALICE)
    next_url = response.headers["link"].split(";")[0].strip("<>")
    assert (await client.get(next_url, headers=BOB)).json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   \t "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "ok", "priority": "urgent"}, "priority"),
        ({"title": "ok", "description": "x" * 10_001}, "description"),
        ({"title": "ok", "due_date": "next tuesday"}, "due_date"),
        ({"title": "ok", "due_date": "0001-01-01T00:00:00+01:00"}, "due_date"),
        ({"title": "ok", "completed": "sometimes"}, "completed"),
        ({"title": "nul \x00 byte"}, "title"),
        ({"title": "ok", "description": "nul \x00"}, "description"),
        ({"title": 5}, "title"),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post(TASKS, json=body, headers=ALICE)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert field in response.json()["detail"]
    assert (await client.get(TASKS, headers=ALICE)).json() == []


async def test_title_of_exactly_200_characters_is_accepted(client: httpx.AsyncClient) -> None:
    task = await create(client, title="é" * 200, description="d" * 10_000)
    assert task["title"] == "é" * 200
    assert len(task["description"]) == 10_000


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-02-10T00:00:00", "2026-02-10T00:00:00Z"),
        ("2026-02-10T05:30:00+05:30", "2026-02-10T00:00:00Z"),
        ("2026-02-09T19:00:00-05:00", "2026-02-10T00:00:00Z"),
        ("2026-02-10T00:00:00.123456Z", "2026-02-10T00:00:00.123456Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ],
)
async def test_due_dates_are_stored_and_returned_in_utc(
    client: httpx.AsyncClient, sent: str, stored: str
) -> None:
    task = await create(client, due_date=sent)
    assert task["due_date"] == stored
    fetched = (await client.get(f"{TASKS}/{task['id']}", headers=ALICE)).json()
    assert fetched["due_date"] == stored


@pytest.mark.parametrize(
    "task_id",
    [
        "0",
        "-1",
        "abc",
        "1.5",
        str(2**63),
        str(2**64 + 5),
        # Only plain decimal digits are ids: none of these is task 1 or 10.
        "1_0",
        "+1",
        "%201",
        "1%20",
        "1.0",
        "%EF%BC%91",  # a full-width digit one
    ],
)
async def test_bad_path_ids_are_422(client: httpx.AsyncClient, task_id: str) -> None:
    await create(client, title="task one")  # so that a loose reading would find a task
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(
            method,
            f"{TASKS}/{task_id}",
            headers=ALICE,
            json={"title": "x"} if method == "PUT" else None,
        )
        assert response.status_code == 422, (method, task_id, response.text)
        assert response.json()["code"] == "VALIDATION_ERROR"


async def test_largest_id_is_simply_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{TASKS}/{2**63 - 1}", headers=ALICE)
    assert (response.status_code, response.json()["code"]) == (404, "TASK_NOT_FOUND")


@pytest.mark.parametrize(
    "text",
    [
        "emoji 🎉👩‍👩‍👧‍👦",
        "עברית right-to-left",
        "e\u0301 combining",
        "中文",
        "\u200f\u202e mixed",
        "tab\tnewline\n",
        'quote " backslash \\',
    ],
)
async def test_unicode_round_trips_exactly(client: httpx.AsyncClient, text: str) -> None:
    task = await create(client, title=text, description=text * 3)
    fetched = (await client.get(f"{TASKS}/{task['id']}", headers=ALICE)).json()
    assert fetched["title"] == text
    assert fetched["description"] == text * 3
    assert fetched["title"].encode() == text.encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "ok", "due_date": 0}, "due_date"),
        ({"title": "ok", "due_date": 1.5}, "due_date"),
        ({"title": "ok", "due_date": "1700000000"}, "due_date"),
        ({"title": "ok", "completed": 1}, "completed"),
        ({"title": "ok", "completed": "true"}, "completed"),
        ({"title": "ok", "completed": "yes"}, "completed"),
    ],
)
async def test_no_lenient_coercion_of_dates_and_booleans(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    created = await client.post(TASKS, json=body, headers=ALICE)
    assert created.status_code == 422, created.text
    assert field in created.json()["detail"]
    task = await create(client)
    updated = await client.put(f"{TASKS}/{task['id']}", json={field: body[field]}, headers=ALICE)
    assert updated.status_code == 422, updated.text


async def test_a_body_that_is_not_utf8_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TASKS, content=b'{"title": "\xff"}', headers={**ALICE, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("content_type", [None, "", "application/json; charset=utf-8"])
async def test_a_json_body_without_a_json_content_type_header_is_read_as_json(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """As the README says: Content-Type application/json, or none."""
    headers = dict(ALICE)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await client.post(TASKS, content=b'{"title": "no type"}', headers=headers)
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    update = await client.put(f"{TASKS}/{task_id}", content=b'{"completed": true}', headers=headers)
    assert update.status_code == 200, update.text
    assert update.json()["completed"] is True


@pytest.mark.parametrize("content_type", ["text/plain", "application/a/b+json", "application/xml"])
async def test_a_body_declared_as_something_else_is_415(
    client: httpx.AsyncClient, content_type: str
) -> None:
    headers = {**ALICE, "Content-Type": content_type}
    response = await client.post(TASKS, content=b'{"title": "x"}', headers=headers)
    assert response.status_code == 415
    assert response.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_head_answers_every_get_route_with_its_headers_and_no_body(
    client: httpx.AsyncClient,
) -> None:
    """Load balancers' HEAD health checks, and RFC 9110: HEAD is GET without the body."""
    task = await create(client, title="headed")
    for path, headers in [
        ("/health", {}),
        ("/ready", {}),
        (TASKS, ALICE),
        (f"{TASKS}?limit=1", ALICE),
        (f"{TASKS}/{task['id']}", ALICE),
        ("/openapi.json", {}),
    ]:
        got = await client.get(path, headers=headers)
        head = await client.head(path, headers=headers)
        assert head.status_code == got.status_code == 200, (path, head.status_code)
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers["content-length"] == got.headers["content-length"], path
        assert head.headers.get("link") == got.headers.get("link"), path
    missing = await client.head(f"{TASKS}/999999", headers=ALICE)
    assert missing.status_code == 404
    assert missing.content == b""


async def test_head_is_not_allowed_where_get_is_not(client: httpx.AsyncClient) -> None:
    response = await client.head("/api/v1/nothing-here")
    assert response.status_code == 404
    allowed = await client.request("POST", f"{TASKS}/1", headers=ALICE)
    assert allowed.status_code == 405
    assert "HEAD" in allowed.headers["allow"].split(", ")
