"""The specification's "Manual Testing Checklist", one test per line, on every backend."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from taskapi.models import users
from tests.support.tokens import auth, make_token

TASKS = "/api/v1/tasks"


async def _user_rows(engine: AsyncEngine, sub: str) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            select(func.count()).select_from(users).where(users.c.id == sub)
        )
        return int(result.scalar_one())


async def test_health_check_works_without_authentication(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "service": "task-management-api",
        "version": "1.0.0",
    }


async def test_all_task_endpoints_require_authentication(client: httpx.AsyncClient) -> None:
    created = await client.post(TASKS, json={"title": "mine"}, headers=auth("alice"))
    task_id = created.json()["id"]
    calls = [
        ("GET", TASKS, None),
        ("POST", TASKS, {"title": "x"}),
        ("GET", f"{TASKS}/{task_id}", None),
        ("PUT", f"{TASKS}/{task_id}", {"title": "x"}),
        ("DELETE", f"{TASKS}/{task_id}", None),
    ]
    for method, url, body in calls:
        response = await client.request(method, url, json=body)
        assert response.status_code == 401, (method, url)
        assert response.json()["code"] == "MISSING_TOKEN"
    assert (await client.get(f"{TASKS}/{task_id}", headers=auth("alice"))).json()["title"] == "mine"


async def test_invalid_or_missing_tokens_return_401(client: httpx.AsyncClient) -> None:
    missing = await client.get(TASKS)
    invalid = await client.get(TASKS, headers={"Authorization": "Bearer invalid-token"})
    assert (missing.status_code, missing.json()["code"]) == (401, "MISSING_TOKEN")
    assert (invalid.status_code, invalid.json()["code"]) == (401, "INVALID_TOKEN")


async def test_users_can_only_see_their_own_tasks(client: httpx.AsyncClient) -> None:
    await client.post(TASKS, json={"title": "alice's"}, headers=auth("alice"))
    await client.post(TASKS, json={"title": "bob's"}, headers=auth("bob"))
    alice = (await client.get(TASKS, headers=auth("alice"))).json()
    bob = (await client.get(TASKS, headers=auth("bob"))).json()
    assert [task["title"] for task in alice] == ["alice's"]
    assert [task["title"] for task in bob] == ["bob's"]


async def test_users_cannot_access_other_users_tasks(client: httpx.AsyncClient) -> None:
    task = (await client.post(TASKS, json={"title": "secret"}, headers=auth("alice"))).json()
    response = await client.get(f"{TASKS}/{task['id']}", headers=auth("bob"))
    assert response.status_code == 404
    assert response.json()["code"] == "TASK_NOT_FOUND"


async def test_first_time_authentication_creates_user_record(
    client: httpx.AsyncClient, app: object
) -> None:
    engine = app.state.engine  # type: ignore[attr-defined]
    assert await _user_rows(engine, "carol") == 0
    token = make_token("carol", email="carol@example.com", name="Carol")
    response = await client.get(TASKS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert await _user_rows(engine, "carol") == 1


async def test_subsequent_authentications_reuse_existing_user(
    client: httpx.AsyncClient, app: object
) -> None:
    engine = app.state.engine  # type: ignore[attr-defined]
    for _ in range(3):
        assert (await client.get(TASKS, headers=auth("dave"))).status_code == 200
    # A second token of the same user (new iat/exp) is the same user too.
    assert (await client.get(TASKS, headers=auth("dave", ttl=900))).status_code == 200
    assert await _user_rows(engine, "dave") == 1


async def test_task_creation_sets_correct_user_id(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TASKS, json={"title": "t", "user_id": "mallory"}, headers=auth("erin")
    )
    assert response.status_code == 201
    assert response.json()["user_id"] == "erin"


async def test_task_updates_only_work_for_owned_tasks(client: httpx.AsyncClient) -> None:
    task = (await client.post(TASKS, json={"title": "original"}, headers=auth("alice"))).json()
    other = await client.put(f"{TASKS}/{task['id']}", json={"title": "hacked"}, headers=auth("bob"))
    assert (other.status_code, other.json()["code"]) == (404, "TASK_NOT_FOUND")
    owner = await client.put(
        f"{TASKS}/{task['id']}", json={"title": "renamed"}, headers=auth("alice")
    )
    assert owner.status_code == 200
    assert owner.json()["title"] == "renamed"


async def test_task_deletion_only_works_for_owned_tasks(client: httpx.AsyncClient) -> None:
    task = (await client.post(TASKS, json={"title": "keep"}, headers=auth("alice"))).json()
    other = await client.delete(f"{TASKS}/{task['id']}", headers=auth("bob"))
    assert (other.status_code, other.json()["code"]) == (404, "TASK_NOT_FOUND")
    assert (await client.get(f"{TASKS}/{task['id']}", headers=auth("alice"))).status_code == 200
    assert (await client.delete(f"{TASKS}/{task['id']}", headers=auth("alice"))).status_code == 204
    assert (await client.get(f"{TASKS}/{task['id']}", headers=auth("alice"))).status_code == 404
