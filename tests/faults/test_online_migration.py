"""Migration 0002 is online: it never deadlocks with the service's statements, a failed
attempt runs again, and its index build is bounded by `lock_timeout` alone.

Each test here runs `alembic` as a user does (a subprocess, `migrations/env.py`) on a fresh
database at revision 0001 on the shared server, with one session of its own in the role of a
request of the service that is running while the migration runs.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.faults._support import ROOT
from tests.support import databases

pytestmark = pytest.mark.slow

FEED_INDEX = "ix_tasks_user_id_change_seq_id"
MIGRATION_APP = "migration"  # the application_name of the migration's session
MIGRATION_TIMEOUT = 240.0
WAIT_TIMEOUT = 60.0  # for the migration to reach a lock (alembic starts in seconds)


def alembic_env(url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@dataclass
class Step:
    """One `alembic` command, as it ran."""

    args: tuple[str, ...]
    started: float = 0.0
    ended: float = 0.0
    returncode: int | None = None
    output: str = ""
    log: str = ""  # the server's log while it ran (and the load went on after it)

    @property
    def seconds(self) -> float:
        return self.ended - self.started


async def alembic(url: str, *args: str, **env: str) -> Step:
    """`alembic <args>` on `url`, its session named MIGRATION_APP."""
    step = Step(args)
    alembic_bin = Path(sys.executable).with_name("alembic")
    step.started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        str(alembic_bin),
        *args,
        cwd=ROOT,
        env=alembic_env(f"{url}?application_name={MIGRATION_APP}", **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(MIGRATION_TIMEOUT):
        out, _ = await process.communicate()
    step.ended = time.perf_counter()
    step.returncode = process.returncode
    step.output = out.decode(errors="replace")
    return step


async def migration_waits(admin: asyncpg.Connection) -> float | None:
    """How long the migration's session has been waiting for a lock (None: it is not)."""
    waited: float | None = await admin.fetchval(
        "SELECT max(extract(epoch FROM now() - l.waitstart)) FROM pg_locks l "
        "JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.application_name = $1",
        MIGRATION_APP,
    )
    return waited


async def until_migration_waits(
    admin: asyncpg.Connection, step: asyncio.Task[Step], at_least: float = 0.0
) -> float:
    """Poll until the migration has waited for a lock `at_least` seconds."""
    deadline = time.perf_counter() + WAIT_TIMEOUT
    while (waited := await migration_waits(admin)) is None or waited < at_least:
        if step.done():
            raise AssertionError(f"the migration ended first:\n{step.result().output[-3000:]}")
        assert time.perf_counter() < deadline, "the migration never waited for a lock"
        await asyncio.sleep(0.01)  # polling interval
    return waited


async def revision_and_index(admin: asyncpg.Connection) -> tuple[str, bool | None]:
    revision = await admin.fetchval("SELECT version_num FROM alembic_version")
    valid = await admin.fetchval(
        "SELECT indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = $1",
        FEED_INDEX,
    )
    return revision, valid


@pytest.fixture
async def at_0001(pg_admin_url: str | None) -> AsyncIterator[str]:
    """A fresh database on the shared server at revision 0001, with a user and a task."""
    if pg_admin_url is None:
        databases.skip_or_fail("PostgreSQL is not available")
    assert pg_admin_url is not None
    name = f"taskapi_migration_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = databases.with_database(pg_admin_url, name)
    try:
        step = await alembic(url, "upgrade", "0001")
        assert step.returncode == 0, step.output
        connection = await asyncpg.connect(url, timeout=10)
        try:
            await connection.execute(
                "INSERT INTO users (id, created_at, updated_at) VALUES ('u1', now(), now()); "
                "INSERT INTO tasks (title, user_id, created_at, updated_at) "
                "SELECT 'task ' || g, 'u1', now(), now() FROM generate_series(1, 100) g"
            )
        finally:
            await connection.close()
        yield url
    finally:
        admin = await asyncpg.connect(pg_admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def admin(at_0001: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(at_0001, timeout=10)
    yield connection
    await connection.close()


@pytest.fixture
async def request_session(at_0001: str) -> AsyncIterator[asyncpg.Connection]:
    """A session in the role of one of the service's requests."""
    connection = await asyncpg.connect(at_0001, timeout=10)
    yield connection
    await connection.close()


INSERT_TASK = (
    "INSERT INTO tasks (title, user_id, created_at, updated_at) VALUES ('new', $1, now(), now())"
)
# The two orders in which the service of revision 0001 locks the two tables the migration
# alters: a task's INSERT locks tasks, then users for its foreign key (every create); behind
# a transaction pooler a request of a user not yet known to the process provisions the user
# and creates the task in one transaction: users, then tasks.
SERVICE_ORDERS = {
    "tasks-then-users": ("UPDATE tasks SET title = title WHERE id = 1", "u1"),
    "users-then-tasks": (
        "INSERT INTO users (id, created_at, updated_at) VALUES ('u2', now(), now()) "
        "ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at",
        "u2",
    ),
}


@pytest.mark.parametrize("order", list(SERVICE_ORDERS))
async def test_the_migration_does_not_deadlock_with_a_request_in_either_lock_order(
    at_0001: str, admin: asyncpg.Connection, request_session: asyncpg.Connection, order: str
) -> None:
    """A request holds its first table's lock when the migration starts, and needs the
    other one only once the migration waits: a migration that held one table's lock while
    waiting for the other's would close a cycle in one of the two orders (found by the load
    test below: "deadlock detected", a failed request or a failed migration)."""
    first, user = SERVICE_ORDERS[order]
    transaction = request_session.transaction()
    await transaction.start()
    await request_session.execute(first)
    step = asyncio.create_task(alembic(at_0001, "upgrade", "head"))
    committed = False
    try:
        await until_migration_waits(admin, step)
        async with asyncio.timeout(30):
            await request_session.execute(INSERT_TASK, user)
        await transaction.commit()
        committed = True
    finally:
        if not committed:
            await transaction.rollback()
        result = await step
    assert result.returncode == 0, result.output[-3000:]
    assert await revision_and_index(admin) == ("0002", True)


async def test_a_migration_whose_index_build_failed_runs_again(
    at_0001: str, admin: asyncpg.Connection, request_session: asyncpg.Connection
) -> None:
    """CREATE INDEX CONCURRENTLY waits for every transaction that holds an older snapshot;
    one that outlives `lock_timeout` makes it fail, leaving an INVALID index behind. Run
    again, the migration must start afresh and finish (not fail on what the first attempt
    already did)."""
    transaction = request_session.transaction(isolation="repeatable_read")
    await transaction.start()
    await request_session.fetchval("SELECT 1")  # a snapshot, and no lock on any table
    try:
        failed = await alembic(at_0001, "upgrade", "head")
    finally:
        await transaction.rollback()
    assert failed.returncode != 0
    assert "lock timeout" in failed.output, failed.output[-3000:]
    assert await revision_and_index(admin) == ("0001", False)

    again = await alembic(at_0001, "upgrade", "head")
    assert again.returncode == 0, again.output[-3000:]
    assert await revision_and_index(admin) == ("0002", True)


async def test_the_index_build_is_bounded_by_lock_timeout_not_by_the_request_timeout(
    at_0001: str, admin: asyncpg.Connection, request_session: asyncpg.Connection
) -> None:
    """An index built concurrently may take longer than a request may (a large table; here a
    wait for a transaction that holds an older snapshot): the migration's statements are
    bounded by `lock_timeout` for their waits, not by the service's
    DB_STATEMENT_TIMEOUT_SECONDS, which once cut the build after 10 s by default."""
    transaction = request_session.transaction(isolation="repeatable_read")
    await transaction.start()
    await request_session.fetchval("SELECT 1")  # a snapshot, and no lock on any table
    step = asyncio.create_task(
        alembic(at_0001, "upgrade", "head", DB_STATEMENT_TIMEOUT_SECONDS="1")
    )
    try:
        waited = await until_migration_waits(admin, step, at_least=2.0)
    finally:
        await transaction.rollback()
    result = await step
    assert waited >= 2.0
    assert result.returncode == 0, result.output[-3000:]
    assert await revision_and_index(admin) == ("0002", True)
