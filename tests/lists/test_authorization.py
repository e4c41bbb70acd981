"""Object-level authorization for lists: user B can neither see nor touch user A's lists,
nor put tasks into them, nor find A's tasks through the list filter, whatever else the
request says. Each foreign request answers exactly as the same request on a missing list."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.lists.test_lists import new_list
from tests.support.tasks import create
from tests.support.tokens import auth

LISTS = "/api/v1/lists"
TASKS = "/api/v1/tasks"
ALICE = auth("alice")
BOB = auth("bob")
PER_REQUEST_HEADERS = frozenset({"x-request-id", "date", "ratelimit", "ratelimit-policy"})
MISSING = 9_000_000


def comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = [
        (name.lower(), value)
        for name, value in response.headers.multi_items()
        if name.lower() not in PER_REQUEST_HEADERS
    ]
    return response.status_code, response.content, headers


async def alice_state(client: httpx.AsyncClient) -> tuple[Any, ...]:
    """Alice's lists, tasks and change feed (its changes; `next` holds the time)."""
    lists = await client.get(LISTS, headers=ALICE)
    tasks = await client.get(TASKS, headers=ALICE)
    feed = await client.get(f"{TASKS}/changes", headers=ALICE)
    return lists.content, tasks.content, feed.json()["changes"]


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_foreign_lists_are_indistinguishable_from_missing_ones(
    client: httpx.AsyncClient, suffix: str
) -> None:
    errands = await new_list(client)
    inbox_task = await create(client, ALICE, title="a inbox")
    await create(client, ALICE, title="a listed", list_id=errands["id"])
    bobs_list = await new_list(client, "Bob's", headers=BOB)
    bobs_task = await create(client, BOB, title="b")
    before = await alice_state(client)

    requests: list[tuple[str, str, Any]] = [
        ("GET", "{}", None),
        ("PATCH", "{}", {"name": "stolen"}),
        ("DELETE", "{}?move_tasks_to=inbox", None),
        ("DELETE", "{}?move_tasks_to=" + str(bobs_list["id"]), None),
        ("DELETE", "{}", None),
    ]
    for method, path, body in requests:
        for _ in range(2):  # a first attempt must not change what a second one sees
            foreign = await client.request(
                method,
                f"{LISTS}/" + path.format(f"{errands['id']}{suffix}"),
                json=body,
                headers=BOB,
            )
            missing = await client.request(
                method, f"{LISTS}/" + path.format(f"{MISSING}{suffix}"), json=body, headers=BOB
            )
            assert foreign.status_code == 404, (method, path, foreign.text)
            assert foreign.json()["code"] == "LIST_NOT_FOUND"
            assert comparable(foreign) == comparable(missing), (method, path)

    # Bob's writes naming Alice's list: as a missing list, and nothing of Alice's changes.
    bodies = {"title": "into alice's list"}
    for list_id in (errands["id"], MISSING):
        response = await client.post(
            f"{TASKS}{suffix}", json={**bodies, "list_id": list_id}, headers=BOB
        )
        assert response.status_code == 422
        assert response.json()["code"] == "LIST_NOT_FOUND"
    answers = []
    for list_id in (errands["id"], MISSING):
        for method in ("PUT", "PATCH"):
            response = await client.request(
                method, f"{TASKS}/{bobs_task['id']}", json={"list_id": list_id}, headers=BOB
            )
            answers.append(comparable(response))
        response = await client.delete(
            f"{LISTS}/{bobs_list['id']}?move_tasks_to={list_id}", headers=BOB
        )
        answers.append(comparable(response))
    assert answers[:3] == answers[3:]
    assert all(status == 422 for status, _, _ in answers)

    # Bob's list filter on Alice's list is as on a missing list: his own tasks only (none).
    for query in ("", "&sort=title", "&completed=false", "&has_due=false", "&limit=1"):
        foreign = await client.get(f"{TASKS}{suffix}?list_id={errands['id']}{query}", headers=BOB)
        missing = await client.get(f"{TASKS}{suffix}?list_id={MISSING}{query}", headers=BOB)
        assert foreign.status_code == 200
        assert foreign.json() == []
        assert comparable(foreign) == comparable(missing)
    inbox = await client.get(f"{TASKS}?list_id=inbox&sort=-title", headers=BOB)
    assert [task["id"] for task in inbox.json()] == [bobs_task["id"]]

    assert await alice_state(client) == before
    alice = await client.get(f"{TASKS}/{inbox_task['id']}", headers=ALICE)
    assert alice.json() == inbox_task


async def test_sorted_and_filtered_pages_never_include_another_users_tasks(
    client: httpx.AsyncClient,
) -> None:
    errands = await new_list(client)
    for n in range(4):
        await create(
            client,
            ALICE,
            title=f"a{n}",
            completed=n % 2 == 0,
            due_date="2030-01-01T00:00:00Z",
            list_id=errands["id"] if n % 2 else None,
        )
    mine = await create(client, BOB, title="b", due_date="2030-01-01T00:00:00Z")
    for query in (
        "sort=title",
        "sort=-due_date,priority",
        "due_after=2029-01-01T00:00:00Z&due_before=2031-01-01T00:00:00Z",
        "has_due=true&sort=due_date",
        "overdue=false",
        "completed=false&sort=-completed_at",
        "completed_after=2000-01-01T00:00:00Z",
        "list_id=inbox&sort=-updated_at&limit=1",
    ):
        response = await client.get(f"{TASKS}?{query}", headers=BOB)
        assert response.status_code == 200, query
        assert all(task["user_id"] == "bob" for task in response.json()), query
        expected = [] if "completed_after" in query else [mine["id"]]
        assert [task["id"] for task in response.json()] == expected, query
