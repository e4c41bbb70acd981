"""`/api/v1/me`: the caller's profile and counts; deleting every row of the caller."""

from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager

from taskapi.app import create_app
from taskapi.config import Settings
from tests.lists.test_lists import new_list
from tests.support.tasks import create
from tests.support.tokens import auth

ME = "/api/v1/me"
TASKS = "/api/v1/tasks"
ALICE = auth("alice")
BOB = auth("bob")


async def test_me_is_the_profile_and_counts(client: httpx.AsyncClient) -> None:
    headers = auth("carol", email="c@example.com", name="Carol")
    empty = (await client.get(ME, headers=headers)).json()
    assert empty["id"] == "carol"
    assert empty["email"] == "c@example.com"
    assert empty["name"] == "Carol"
    assert (empty["tasks"], empty["completed_tasks"], empty["lists"]) == (0, 0, 0)
    await new_list(client, headers=headers)
    await create(client, headers)
    await create(client, headers, completed=True)
    await create(client, BOB)
    me = (await client.get(ME, headers=headers)).json()
    assert (me["tasks"], me["completed_tasks"], me["lists"]) == (2, 1, 1)
    assert set(me) == {
        "id",
        "email",
        "name",
        "avatar_url",
        "created_at",
        "updated_at",
        "tasks",
        "completed_tasks",
        "lists",
    }


async def test_delete_me_deletes_every_row_and_the_next_request_starts_afresh(
    client: httpx.AsyncClient,
) -> None:
    errands = await new_list(client)
    await create(client, ALICE, list_id=errands["id"])
    gone = await create(client, ALICE, title="to delete")
    await client.delete(f"{TASKS}/{gone['id']}", headers=ALICE)  # a tombstone
    key = {**ALICE, "Idempotency-Key": "k1"}
    assert (await client.post(TASKS, json={"title": "keyed"}, headers=key)).status_code == 201
    bobs = await create(client, BOB)
    before = (await client.get(ME, headers=ALICE)).json()

    assert (await client.delete(ME, headers=ALICE)).status_code == 204
    again = (await client.get(ME, headers=ALICE)).json()
    assert (again["tasks"], again["completed_tasks"], again["lists"]) == (0, 0, 0)
    assert again["created_at"] >= before["created_at"]
    assert (await client.get(TASKS, headers=ALICE)).json() == []
    assert (await client.get("/api/v1/lists", headers=ALICE)).json() == []
    assert (await client.get(f"{TASKS}/changes", headers=ALICE)).json()["changes"] == []
    replay = await client.post(TASKS, json={"title": "keyed"}, headers=key)
    assert replay.status_code == 201
    assert "idempotent-replayed" not in replay.headers  # the key went with the user
    assert (await client.get(f"{TASKS}/{bobs['id']}", headers=BOB)).json() == bobs
    assert (await client.get(ME, headers=BOB)).json()["tasks"] == 1


async def test_a_worker_that_still_remembers_a_deleted_user_provisions_it_afresh(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """Two workers: `DELETE /api/v1/me` in one makes its own provisioner forget the user;
    the other's still remembers it (no upsert). Each request there that needs the user's
    row finds it gone and runs once more, provisioned afresh: never a 500."""
    headers = auth("dora", email="d@example.com", name="Dora")
    other = create_app(settings)
    async with LifespanManager(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as worker:
            requests = {
                "a task (the fast path)": ("POST", TASKS, {"title": "t"}, 201),
                "a task with labels (a transaction)": (
                    "POST",
                    TASKS,
                    {"title": "t", "labels": ["x"]},
                    201,
                ),
                "a list (FastAPI)": ("POST", "/api/v1/lists", {"name": "l"}, 201),
                "the profile": ("GET", ME, None, 200),
            }
            for what, (method, path, body, status) in requests.items():
                assert (await worker.get(ME, headers=headers)).status_code == 200  # remembered
                assert (await client.delete(ME, headers=headers)).status_code == 204
                response = await worker.request(method, path, json=body, headers=headers)
                assert response.status_code == status, (what, response.text)
                me = (await worker.get(ME, headers=headers)).json()
                assert (me["email"], me["name"]) == ("d@example.com", "Dora"), what
                assert me["tasks"] + me["lists"] == (0 if method == "GET" else 1), (what, me)
