"""The PostgreSQL connection handout: first come first served, bounded, self-healing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskapi.db import open_database
from taskapi.db import postgres as pg_module
from taskapi.db.postgres import PostgresDatabase
from tests.conftest import make_settings

pytestmark = pytest.mark.parametrize("backend", ["postgresql"])


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[PostgresDatabase]:
    database = await open_database(make_settings(database_url, db_pool_size=2))
    assert isinstance(database, PostgresDatabase)
    try:
        yield database
    finally:
        await database.close()


async def until(condition: Any, turns: int = 1000) -> None:
    """Let the event loop run until `condition()` holds (bounded by loop turns, not time)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_waiters_get_connections_in_arrival_order(db: PostgresDatabase) -> None:
    held = [await db._checkout(), await db._checkout()]  # the pool (2) is exhausted
    order: list[int] = []

    async def request(number: int) -> None:
        connection = await db._checkout()
        order.append(number)
        db._checkin(connection, None)

    waiters = []
    for number in range(6):
        waiters.append(asyncio.create_task(request(number)))
        await until(lambda n=number: db._slots.waiting() == n + 1)
    db._checkin(held.pop(), None)
    # A request arriving just as a connection is released must queue behind the others.
    late = asyncio.create_task(request(99))
    db._checkin(held.pop(), None)
    await asyncio.gather(*waiters, late)
    assert order == [0, 1, 2, 3, 4, 5, 99]
    assert db.pool_stats() == {"size": 2, "idle": 2}


async def test_a_full_pool_answers_unavailable_after_the_pool_timeout(database_url: str) -> None:
    settings = make_settings(database_url, db_pool_size=1, db_pool_timeout_seconds=0.05)
    database = await open_database(settings)
    assert isinstance(database, PostgresDatabase)
    try:
        held = await database._checkout()
        with pytest.raises(TimeoutError):
            await database._checkout()
        database._checkin(held, None)
        again = await database._checkout()  # the slot was not lost
        database._checkin(again, None)
    finally:
        await database.close()


async def test_a_failed_connection_is_closed_and_the_others_replaced(db: PostgresDatabase) -> None:
    first, second = await db._checkout(), await db._checkout()
    db._checkin(second, None)
    assert db.pool_stats() == {"size": 2, "idle": 1}
    db._checkin(first, ConnectionResetError("lost mid-exchange"))
    assert first.is_closed()
    assert db.pool_stats()["size"] == 1  # the failed one is gone at once
    fresh = await db._checkout()  # the idle one predates the failure: replaced
    assert fresh is not second
    assert second.is_closed()
    assert await fresh.fetchval("SELECT 1") == 1
    db._checkin(fresh, None)


async def test_a_cancelled_requests_connection_is_never_reused(db: PostgresDatabase) -> None:
    connection = await db._checkout()
    db._checkin(connection, asyncio.CancelledError())
    assert connection.is_closed()
    other = await db._checkout()
    assert other is not connection
    db._checkin(other, None)


async def test_an_ordinary_error_keeps_the_connection(db: PostgresDatabase) -> None:
    connection = await db._checkout()
    db._checkin(connection, LookupError("a 404, say"))
    assert not connection.is_closed()
    assert await db._checkout() is connection


async def test_idle_connections_are_closed_after_their_lifetime(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_module, "IDLE_CHECK_SECONDS", 0)
    monkeypatch.setattr(pg_module, "IDLE_LIFETIME_SECONDS", 0)
    database = await open_database(make_settings(database_url))
    assert isinstance(database, PostgresDatabase)
    try:
        connection = await database._checkout()
        database._checkin(connection, None)
        await until(lambda: database.pool_stats() == {"size": 0, "idle": 0})
        assert connection.is_closed()
    finally:
        await database.close()
