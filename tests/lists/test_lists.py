"""Lists through HTTP: CRUD, `list_id` on tasks, the filter, delete with and without a move."""

from __future__ import annotations

import httpx
import pytest

from tests.support.tasks import create
from tests.support.tokens import auth

LISTS = "/api/v1/lists"
TASKS = "/api/v1/tasks"
ALICE = auth("alice")
BOB = auth("bob")


async def new_list(
    client: httpx.AsyncClient, name: str = "Errands", headers: dict[str, str] = ALICE
) -> dict:
    response = await client.post(LISTS, json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    body = dict(response.json())
    assert response.headers["location"] == f"{LISTS}/{body['id']}"
    return body


async def ids(client: httpx.AsyncClient, query: str, headers: dict[str, str] = ALICE) -> list[int]:
    response = await client.get(f"{TASKS}?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()]


async def test_list_crud(client: httpx.AsyncClient) -> None:
    errands = await new_list(client, "  Errands ")
    assert set(errands) == {"id", "name", "created_at", "updated_at"}
    assert errands["name"] == "  Errands "
    work = await new_list(client, "Work")
    response = await client.get(LISTS, headers=ALICE)
    assert [item["id"] for item in response.json()] == [errands["id"], work["id"]]
    response = await client.patch(f"{LISTS}/{work['id']}", json={"name": "Job"}, headers=ALICE)
    assert response.status_code == 200
    assert response.json()["name"] == "Job"
    assert (await client.get(f"{LISTS}/{work['id']}", headers=ALICE)).json()["name"] == "Job"
    page = await client.get(f"{LISTS}?limit=1", headers=ALICE)
    assert [item["id"] for item in page.json()] == [errands["id"]]
    link = page.headers["link"].split(";")[0].strip("<>")
    assert [item["id"] for item in (await client.get(link, headers=ALICE)).json()] == [work["id"]]
    for bad in ({"name": ""}, {"name": "x" * 101}, {"name": "   "}, {}):
        response = await client.post(LISTS, json=bad, headers=ALICE)
        assert response.status_code == 422, bad


async def test_another_users_list_is_missing(client: httpx.AsyncClient) -> None:
    errands = await new_list(client)
    for method, body in (("GET", None), ("PATCH", {"name": "mine"}), ("DELETE", None)):
        for list_id in (errands["id"], errands["id"] + 1000):
            response = await client.request(method, f"{LISTS}/{list_id}", json=body, headers=BOB)
            assert response.status_code == 404
            assert response.json()["code"] == "LIST_NOT_FOUND"
    assert (await client.get(LISTS, headers=BOB)).json() == []
    assert (await client.get(f"{LISTS}/{errands['id']}", headers=ALICE)).json() == errands


async def test_tasks_in_lists_and_the_filter(client: httpx.AsyncClient) -> None:
    errands = await new_list(client)
    inbox = await create(client, title="inbox")
    assert inbox["list_id"] is None
    milk = await create(client, title="milk", list_id=errands["id"])
    assert milk["list_id"] == errands["id"]
    assert await ids(client, f"list_id={errands['id']}") == [milk["id"]]
    assert await ids(client, "list_id=inbox") == [inbox["id"]]
    moved = await client.patch(
        f"{TASKS}/{inbox['id']}", json={"list_id": errands["id"]}, headers=ALICE
    )
    assert moved.status_code == 200
    assert moved.json()["id"] == inbox["id"]
    assert await ids(client, f"list_id={errands['id']}") == [inbox["id"], milk["id"]]
    back = await client.put(f"{TASKS}/{milk['id']}", json={"list_id": None}, headers=ALICE)
    assert back.json()["list_id"] is None
    assert await ids(client, "list_id=inbox") == [milk["id"]]
    for bad in ("0", "-1", "x", "inbox2", ""):
        response = await client.get(f"{TASKS}?list_id={bad}", headers=ALICE)
        assert response.status_code == 422
        assert "list_id" in response.json()["detail"]


async def test_a_list_not_the_callers_is_422_list_not_found(client: httpx.AsyncClient) -> None:
    bobs = await new_list(client, headers=BOB)
    mine = await create(client, title="mine")
    for list_id in (bobs["id"], bobs["id"] + 1000):
        response = await client.post(TASKS, json={"title": "t", "list_id": list_id}, headers=ALICE)
        assert response.status_code == 422
        assert response.json()["code"] == "LIST_NOT_FOUND"
        for method in ("PUT", "PATCH"):
            response = await client.request(
                method, f"{TASKS}/{mine['id']}", json={"list_id": list_id}, headers=ALICE
            )
            assert response.status_code == 422
            assert response.json()["code"] == "LIST_NOT_FOUND"
    assert (await client.get(f"{TASKS}/{mine['id']}", headers=ALICE)).json() == mine
    assert await ids(client, f"list_id={bobs['id']}") == []
    for bad in ("1", True, "x", 0):
        response = await client.post(TASKS, json={"title": "t", "list_id": bad}, headers=ALICE)
        assert response.status_code == 422
        assert response.json()["code"] == "VALIDATION_ERROR"


async def test_delete_a_list_deletes_its_tasks_as_feed_deletions(
    client: httpx.AsyncClient,
) -> None:
    errands = await new_list(client)
    keep = await create(client, title="keep")
    gone = [await create(client, title=f"g{n}", list_id=errands["id"]) for n in range(3)]
    since = (await client.get(f"{TASKS}/changes", headers=ALICE)).json()["next"]
    response = await client.delete(f"{LISTS}/{errands['id']}", headers=ALICE)
    assert response.status_code == 204
    assert (await client.get(f"{LISTS}/{errands['id']}", headers=ALICE)).status_code == 404
    assert await ids(client, "") == [keep["id"]]
    feed = (await client.get(f"{TASKS}/changes?since={since}", headers=ALICE)).json()
    assert [(c["id"], c.get("deleted")) for c in feed["changes"]] == [
        (task["id"], True) for task in gone
    ]
    assert [c["version"] for c in feed["changes"]] == [2, 2, 2]


async def test_delete_a_list_moving_its_tasks(client: httpx.AsyncClient) -> None:
    errands = await new_list(client)
    work = await new_list(client, "Work")
    bobs = await new_list(client, headers=BOB)
    tasks = [await create(client, title=f"t{n}", list_id=errands["id"]) for n in range(2)]
    since = (await client.get(f"{TASKS}/changes", headers=ALICE)).json()["next"]
    for target in (str(bobs["id"]), str(errands["id"]), "999999"):
        response = await client.delete(
            f"{LISTS}/{errands['id']}?move_tasks_to={target}", headers=ALICE
        )
        assert response.status_code == 422
        assert response.json()["code"] == "LIST_NOT_FOUND"
    bad = await client.delete(f"{LISTS}/{errands['id']}?move_tasks_to=x", headers=ALICE)
    assert bad.status_code == 422
    assert "move_tasks_to" in bad.json()["detail"]
    response = await client.delete(
        f"{LISTS}/{errands['id']}?move_tasks_to={work['id']}", headers=ALICE
    )
    assert response.status_code == 204
    assert await ids(client, f"list_id={work['id']}") == [task["id"] for task in tasks]
    feed = (await client.get(f"{TASKS}/changes?since={since}", headers=ALICE)).json()
    assert [(c["id"], c["list_id"], c["version"]) for c in feed["changes"]] == [
        (task["id"], work["id"], 2) for task in tasks
    ]
    response = await client.delete(f"{LISTS}/{work['id']}?move_tasks_to=inbox", headers=ALICE)
    assert response.status_code == 204
    assert await ids(client, "list_id=inbox") == [task["id"] for task in tasks]


async def test_a_list_gone_between_the_check_and_the_write_is_422(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write itself refuses a list that is not the owner's (PostgreSQL's foreign key,
    SQLite's triggers), as a 422 LIST_NOT_FOUND, never a 500: here with the operation's own
    check out of the way, as when the list is deleted just after it."""

    async def nothing(*_: object) -> None:
        return None

    monkeypatch.setattr("taskapi.tasks.operations.require_list", nothing)
    bobs = await new_list(client, "Bob's", headers=BOB)
    task = await create(client)
    for list_id in (9_000_000, bobs["id"]):
        for method, url, body in (
            ("POST", TASKS, {"title": "x", "list_id": list_id}),
            ("POST", TASKS, {"title": "x", "list_id": list_id, "labels": ["a"]}),
            ("PATCH", f"{TASKS}/{task['id']}", {"list_id": list_id}),
            ("PUT", f"{TASKS}/{task['id']}", {"list_id": list_id, "labels": ["b"]}),
        ):
            response = await client.request(method, url, json=body, headers=ALICE)
            assert response.status_code == 422, (method, body, response.text)
            assert response.json()["code"] == "LIST_NOT_FOUND"
            assert response.json()["detail"].startswith("body.list_id"), response.text
    assert (await client.get(f"{TASKS}/{task['id']}", headers=ALICE)).json() == task
    assert await ids(client, "") == [task["id"]]
