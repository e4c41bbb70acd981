"""Concurrent writers on one task and one new user: no 500, no lost or duplicated rows.

Runs in-process on the shared PostgreSQL and on SQLite (where "database is locked" must
never surface as an error).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.faults._support import TASKS
from tests.support.tokens import auth


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Overrides the conftest fixture: direct PostgreSQL and SQLite."""
    return str(request.param)


async def test_concurrent_updates_of_one_task(client: httpx.AsyncClient, app: FastAPI) -> None:
    headers = auth("racer")
    created = await client.post(TASKS, json={"title": "start"}, headers=headers)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    titles = [f"title-{i}" for i in range(30)]

    async with asyncio.timeout(60):
        responses = await asyncio.gather(
            *(
                client.put(f"{TASKS}/{task_id}", json={"title": title}, headers=headers)
                for title in titles
            )
        )
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 30, [r.text for r in responses if r.status_code != 200][:3]
    assert [r.json()["title"] for r in responses] == titles  # each answer is its own write

    final = await client.get(f"{TASKS}/{task_id}", headers=headers)
    assert final.status_code == 200
    assert final.json()["title"] in titles
    # The stored row is exactly what the last writer's UPDATE .. RETURNING answered.
    assert final.json() in [r.json() for r in responses]
    async with app.state.engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT title FROM tasks WHERE id = :id"), {"id": task_id}
        )
    assert stored == final.json()["title"]


async def test_concurrent_first_requests_of_a_new_user(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    headers = auth("brand-new-user")
    async with asyncio.timeout(60):
        responses = await asyncio.gather(
            *(client.post(TASKS, json={"title": f"t{i}"}, headers=headers) for i in range(50))
        )
    statuses = [r.status_code for r in responses]
    assert statuses == [201] * 50, [r.text for r in responses if r.status_code != 201][:3]
    assert len({r.json()["id"] for r in responses}) == 50

    async with app.state.engine.connect() as connection:
        users = await connection.scalar(
            text("SELECT count(*) FROM users WHERE id = 'brand-new-user'")
        )
        tasks = await connection.execute(
            text("SELECT title FROM tasks WHERE user_id = 'brand-new-user'")
        )
        titles = sorted(row[0] for row in tasks)
    assert users == 1
    assert titles == sorted(f"t{i}" for i in range(50))
