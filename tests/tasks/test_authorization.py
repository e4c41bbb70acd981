"""Object-level authorization: user B can neither see nor touch user A's tasks.

For every task endpoint and method (with and without the trailing slash), B's request on A's
task must answer exactly what B's request on a task that does not exist answers: a 404 with
the same status, body and headers (bar the per-request ones). B's lists never include A's
tasks, whatever the filters, even with a cursor taken from A's own list. After all of it, A
reads the task back byte for byte as before.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from taskapi.tasks.contract import MAX_TASK_ID
from tests.support.tasks import create
from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
ALICE = auth("alice")
BOB = auth("bob")
# Headers that legitimately differ between two requests: everything else must be identical.
PER_REQUEST_HEADERS = frozenset({"x-request-id", "date", "ratelimit", "ratelimit-policy"})

A_TASK = {
    "title": "Alice's secret plan",
    "description": "for Alice only",
    "completed": False,
    "priority": "high",
    "due_date": "2030-01-02T03:04:05Z",
}
# What B tries to write: valid, empty, and schema-invalid bodies.
PUT_BODIES: list[Any] = [
    {"title": "owned by bob", "completed": True, "priority": "low", "description": None},
    {},
    {"user_id": "bob"},
]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Rate limiting on, so its dependency runs before the lookup as in production; the
    # limits are high enough never to trip.
    return {
        "rate_limit_enabled": True,
        "rate_limit_per_minute": 100_000,
        "rate_limit_burst": 10_000,
    }


def comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = [
        (name.lower(), value)
        for name, value in response.headers.multi_items()
        if name.lower() not in PER_REQUEST_HEADERS
    ]
    return response.status_code, response.content, headers


async def missing_ids(client: httpx.AsyncClient) -> list[int]:
    """Ids no task has: one deleted, one never used, the largest the API accepts."""
    gone = await create(client, ALICE, title="deleted")
    response = await client.delete(f"{TASKS}/{gone['id']}", headers=ALICE)
    assert response.status_code == 204
    return [gone["id"], gone["id"] + 1_000_000, MAX_TASK_ID]


async def send(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], body: Any
) -> httpx.Response:
    if method == "PUT":
        return await client.request(method, url, json=body, headers=headers)
    return await client.request(method, url, headers=headers)


MATRIX = [
    pytest.param(
        method,
        suffix,
        body,
        id=f"{method} {{id}}{suffix}{f' body{index}' if body is not None else ''}",
    )
    for suffix in ("", "/")
    for method, bodies in (("GET", [None]), ("PUT", PUT_BODIES), ("DELETE", [None]))
    for index, body in enumerate(bodies)
]


@pytest.mark.parametrize(("method", "suffix", "body"), MATRIX)
async def test_foreign_task_is_indistinguishable_from_a_missing_one(
    client: httpx.AsyncClient, method: str, suffix: str, body: Any
) -> None:
    task = await create(client, ALICE, **A_TASK)
    await create(client, BOB, title="Bob's own task")
    url = f"{TASKS}/{task['id']}{suffix}"
    before = await client.get(url, headers=ALICE)
    assert before.status_code == 200

    foreign = await send(client, method, url, BOB, body)
    assert foreign.status_code == 404, foreign.text
    assert foreign.json() == {
        "detail": "Task not found or you don't have permission to access it",
        "code": "TASK_NOT_FOUND",
    }
    for missing_id in await missing_ids(client):
        missing = await send(client, method, f"{TASKS}/{missing_id}{suffix}", BOB, body)
        assert comparable(foreign) == comparable(missing), missing_id
    # Twice: a first attempt must not change what a second one sees (e.g. a DELETE).
    again = await send(client, method, url, BOB, body)
    assert comparable(again) == comparable(foreign)

    after = await client.get(url, headers=ALICE)
    assert after.status_code == 200
    assert after.content == before.content


async def test_every_foreign_request_leaves_the_task_unchanged(client: httpx.AsyncClient) -> None:
    """The whole matrix against one task, then A's view of it and of her list is unchanged."""
    task = await create(client, ALICE, **A_TASK)
    get_before = await client.get(f"{TASKS}/{task['id']}", headers=ALICE)
    list_before = await client.get(TASKS, headers=ALICE)
    for suffix in ("", "/"):
        url = f"{TASKS}/{task['id']}{suffix}"
        for method, bodies in (("GET", [None]), ("PUT", PUT_BODIES), ("DELETE", [None])):
            for body in bodies:
                response = await send(client, method, url, BOB, body)
                assert response.status_code == 404, (method, url, body, response.text)
    get_after = await client.get(f"{TASKS}/{task['id']}", headers=ALICE)
    assert get_after.status_code == 200
    assert get_after.content == get_before.content
    list_after = await client.get(TASKS, headers=ALICE)
    assert list_after.content == list_before.content


LIST_QUERIES = [
    "",
    "?completed=true",
    "?completed=false",
    "?priority=high",
    "?priority=medium",
    "?priority=low",
    "?completed=false&priority=high",
    "?limit=1",
    "?limit=500",
]


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_lists_never_include_another_users_tasks(
    client: httpx.AsyncClient, suffix: str
) -> None:
    alice_ids = set()
    for index in range(3):
        alice_ids.add((await create(client, ALICE, **{**A_TASK, "title": f"a{index}"}))["id"])
    alice_ids.add((await create(client, ALICE, title="a done", completed=True))["id"])
    bob_task = await create(client, BOB, title="Bob's own", priority="high")

    for query in LIST_QUERIES:
        response = await client.get(f"{TASKS}{suffix}{query}", headers=BOB)
        assert response.status_code == 200, (query, response.text)
        listed = response.json()
        assert {task["id"] for task in listed}.isdisjoint(alice_ids), query
        assert all(task["user_id"] == "bob" for task in listed), query
        expected = (
            []
            if query in ("?completed=true", "?priority=medium", "?priority=low")
            else [bob_task["id"]]
        )
        assert [task["id"] for task in listed] == expected, query
        assert "link" not in response.headers, query


@pytest.mark.parametrize("query", ["", "&completed=false", "&priority=high", "&limit=500"])
async def test_a_cursor_from_anothers_list_shows_only_own_tasks(
    client: httpx.AsyncClient, query: str
) -> None:
    alice_ids = [
        (await create(client, ALICE, **{**A_TASK, "title": f"a{i}"}))["id"] for i in range(3)
    ]
    bob_ids = [(await create(client, BOB, title=f"b{i}", priority="high"))["id"] for i in range(2)]
    more_alice = (await create(client, ALICE, **A_TASK))["id"]

    first_page = await client.get(f"{TASKS}?limit=1", headers=ALICE)
    assert [task["id"] for task in first_page.json()] == [alice_ids[0]]
    match = re.search(r"[?&]cursor=([^&>]+)", first_page.headers["link"])
    assert match is not None
    cursor = match.group(1)

    limit = "" if "limit=" in query else "&limit=100"
    response = await client.get(f"{TASKS}?cursor={cursor}{query}{limit}", headers=BOB)
    assert response.status_code == 200, response.text
    listed = [task["id"] for task in response.json()]
    assert set(listed).isdisjoint([*alice_ids, more_alice])
    # The cursor is only a position: B sees his own tasks after it, nothing of A's.
    assert listed == [task_id for task_id in bob_ids if task_id > alice_ids[0]]

    # A's own continuation is untouched by B's use of her cursor.
    second_page = await client.get(f"{TASKS}?limit=1&cursor={cursor}", headers=ALICE)
    assert [task["id"] for task in second_page.json()] == [alice_ids[1]]
