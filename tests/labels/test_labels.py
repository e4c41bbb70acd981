"""Labels through HTTP: set on create/PUT/PATCH, validation, the `label=` filter, counts,
rename and removal across the caller's tasks (each a change of the feed), isolation."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx

from tests.support.tasks import create
from tests.support.tokens import auth

LABELS = "/api/v1/labels"
TASKS = "/api/v1/tasks"
ALICE = auth("alice")
BOB = auth("bob")


async def ids(client: httpx.AsyncClient, query: str, headers: dict[str, str] = ALICE) -> list[int]:
    response = await client.get(f"{TASKS}?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()]


async def test_labels_are_set_kept_in_order_and_replaced(client: httpx.AsyncClient) -> None:
    task = await create(client, labels=["  Errands ", "home", "Ünïcode"])
    assert task["labels"] == ["Errands", "home", "Ünïcode"]
    assert (await create(client))["labels"] == []
    url = f"{TASKS}/{task['id']}"
    assert (await client.get(url, headers=ALICE)).json() == task
    patched = (await client.patch(url, json={"labels": ["b", "a"]}, headers=ALICE)).json()
    assert patched["labels"] == ["b", "a"]
    assert patched["version"] == task["version"] + 1
    kept = (await client.put(url, json={"title": "t"}, headers=ALICE)).json()
    assert kept["labels"] == ["b", "a"]
    cleared = (await client.patch(url, json={"labels": None}, headers=ALICE)).json()
    assert cleared["labels"] == []
    listed = (await client.get(TASKS, headers=ALICE)).json()
    assert listed[0]["labels"] == []
    feed = (await client.get(f"{TASKS}/changes", headers=ALICE)).json()
    assert feed["changes"][-1]["labels"] == []


async def test_a_repeated_label_is_dropped(client: httpx.AsyncClient) -> None:
    task = await create(client, labels=["Home", " home ", "a", "HOME", "A", "b"])
    assert task["labels"] == ["Home", "a", "b"]
    url = f"{TASKS}/{task['id']}"
    patched = await client.patch(url, json={"labels": ["x", "X"] * 10}, headers=ALICE)
    assert patched.json()["labels"] == ["x"]


async def test_invalid_labels_are_422(client: httpx.AsyncClient) -> None:
    for labels in ([""], ["   "], ["x" * 51], [str(n) for n in range(21)], "a", [1], ["\x00"]):
        response = await client.post(TASKS, json={"title": "t", "labels": labels}, headers=ALICE)
        assert response.status_code == 422, labels
        assert "labels" in response.json()["detail"]
    ok = await client.post(
        TASKS, json={"title": "t", "labels": [str(n) for n in range(20)]}, headers=ALICE
    )
    assert ok.status_code == 201


async def test_the_label_filter_needs_every_label(client: httpx.AsyncClient) -> None:
    both = await create(client, labels=["errands", "Urgent"])
    one = await create(client, labels=["errands"])
    await create(client, labels=["other"])
    await create(client, BOB, labels=["errands"])
    assert await ids(client, "label=ERRANDS") == [both["id"], one["id"]]
    assert await ids(client, "label=errands&label=urgent") == [both["id"]]
    assert await ids(client, "label=errands&sort=-created_at&limit=1") == [one["id"]]
    assert await ids(client, "label=nothing") == []
    assert await ids(client, "label=errands", BOB) != []
    response = await client.get(f"{TASKS}?{urlencode({'label': 'x' * 51})}", headers=ALICE)
    assert response.status_code == 422
    assert "label" in response.json()["detail"]


async def test_counts_rename_and_delete(client: httpx.AsyncClient) -> None:
    a = await create(client, labels=["Errands", "home"])
    b = await create(client, labels=["errands"])
    c = await create(client, labels=["chores", "home"])
    await create(client, BOB, labels=["errands", "bobs"])
    counts = (await client.get(LABELS, headers=ALICE)).json()
    assert counts == [
        {"name": "chores", "tasks": 1},
        {"name": "Errands", "tasks": 2},
        {"name": "home", "tasks": 2},
    ]
    since = (await client.get(f"{TASKS}/changes", headers=ALICE)).json()["next"]
    renamed = await client.patch(f"{LABELS}/HOME", json={"name": "Chores"}, headers=ALICE)
    assert renamed.status_code == 200
    assert renamed.json() == {"name": "Chores", "tasks": 2}
    assert (await client.get(f"{TASKS}/{a['id']}", headers=ALICE)).json()["labels"] == [
        "Errands",
        "Chores",
    ]
    assert (await client.get(f"{TASKS}/{c['id']}", headers=ALICE)).json()["labels"] == ["chores"]
    feed = (await client.get(f"{TASKS}/changes?since={since}", headers=ALICE)).json()
    assert sorted(change["id"] for change in feed["changes"]) == [a["id"], c["id"]]
    assert (await client.delete(f"{LABELS}/errands", headers=ALICE)).status_code == 204
    assert (await client.get(f"{TASKS}/{b['id']}", headers=ALICE)).json()["labels"] == []
    assert (await client.get(LABELS, headers=ALICE)).json() == [{"name": "Chores", "tasks": 2}]
    assert (await client.get(LABELS, headers=BOB)).json() == [
        {"name": "bobs", "tasks": 1},
        {"name": "errands", "tasks": 1},
    ]


async def test_another_users_label_is_missing(client: httpx.AsyncClient) -> None:
    await create(client, BOB, labels=["secret"])
    for method, body in (("PATCH", {"name": "mine"}), ("DELETE", None)):
        foreign = await client.request(method, f"{LABELS}/secret", json=body, headers=ALICE)
        missing = await client.request(method, f"{LABELS}/nothing", json=body, headers=ALICE)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
        assert foreign.json()["code"] == "LABEL_NOT_FOUND"
    assert (await client.get(LABELS, headers=ALICE)).json() == []
    assert await ids(client, "label=secret") == []
    assert (await client.get(LABELS, headers=BOB)).json() == [{"name": "secret", "tasks": 1}]
