"""On PostgreSQL, a task created into a list while another request deletes that list: the
create waits for the delete's lock on the list, then is refused as 422 LIST_NOT_FOUND (the
foreign key), never a 500, and no task is left in a list that does not exist."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from tests.lists.test_lists import new_list
from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
ALICE = auth("alice")
WAIT_TIMEOUT = 30.0


@pytest.fixture
def backend() -> str:
    return "postgresql"  # the race needs a second session holding a lock


async def until_waiting_for_a_lock(
    admin: asyncpg.Connection, request: asyncio.Task[object]
) -> None:
    """Poll until a session other than `admin` waits for a lock (the request's insert)."""
    async with asyncio.timeout(WAIT_TIMEOUT):
        while not await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid() AND datname = current_database()"
        ):
            assert not request.done(), request.result()
            await asyncio.sleep(0.01)  # polling interval


@pytest.mark.parametrize("labels", [[], ["a"]], ids=["autocommit", "transaction"])
async def test_a_task_created_into_a_list_being_deleted_is_422(
    client: httpx.AsyncClient, pg_url: str, labels: list[str]
) -> None:
    errands = await new_list(client)
    deleting = await asyncpg.connect(pg_url)
    admin = await asyncpg.connect(pg_url)
    try:
        transaction = deleting.transaction()
        await transaction.start()
        # What DELETE /api/v1/lists/{id} does: lock the list, delete its tasks, then it.
        await deleting.execute("SELECT id FROM lists WHERE id = $1 FOR UPDATE", errands["id"])
        await deleting.execute("DELETE FROM tasks WHERE list_id = $1", errands["id"])
        await deleting.execute("DELETE FROM lists WHERE id = $1", errands["id"])
        body = {"title": "into the list", "list_id": errands["id"], "labels": labels}
        request = asyncio.create_task(client.post(TASKS, json=body, headers=ALICE))
        try:
            await until_waiting_for_a_lock(admin, request)
        finally:
            await transaction.commit()
        response = await request
        orphans = await admin.fetchval(
            "SELECT count(*) FROM tasks WHERE list_id = $1", errands["id"]
        )
    finally:
        await deleting.close()
        await admin.close()
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "LIST_NOT_FOUND"
    assert orphans == 0
