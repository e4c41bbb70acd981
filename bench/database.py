"""The bench databases: recreated, migrated with the service's own migrations, settled.

asyncpg is imported inside the functions: `--help` and the ceilings' imports of this
package do not need it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bench.core import JWT_SECRET, ROOT, VENV_BIN, log
from bench.options import Options


@asynccontextmanager
async def _connect(url: str, command_timeout: float | None = None) -> AsyncIterator[Any]:
    import asyncpg

    connection = await asyncpg.connect(url, command_timeout=command_timeout)
    try:
        yield connection
    finally:
        await connection.close()


async def _recreate(opts: Options, db: str) -> None:
    if db in ("test", "postgres", "template0", "template1") or not db.startswith("taskapi_bench"):
        raise SystemExit(
            f"refusing to drop/create database {db!r}: name must start with taskapi_bench"
        )
    async with _connect(opts.database_url("postgres")) as connection:
        await connection.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{db}"')


def prepare_db(opts: Options, db: str) -> None:
    """A fresh database `db`, migrated with ``alembic upgrade head`` (the service's schema)."""
    asyncio.run(_recreate(opts, db))
    log(f"alembic upgrade head on {db}")
    env = {
        **os.environ,
        "DATABASE_URL": opts.database_url(db),
        "ENVIRONMENT": "production",
        "JWT_SECRET": JWT_SECRET,
        "JWT_ALGORITHM": "HS256",
    }
    r = subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if r.returncode != 0:
        raise SystemExit(f"alembic upgrade head failed:\n{r.stdout}\n{r.stderr}")


def settle(url: str) -> None:
    """Vacuum and checkpoint, so each workload starts from a settled database: otherwise
    autovacuum and checkpoints set off by the previous write workload share the CPUs
    with the next one (what that cost the mix: bench/README.md, "What a run does")."""

    async def run() -> None:
        async with _connect(url, command_timeout=120) as connection:
            await connection.execute("VACUUM (ANALYZE) tasks, users, lists, task_labels")
            await connection.execute("CHECKPOINT")

    asyncio.run(run())


def execute_bulk(url: str, statements: list[str], command_timeout: float = 1800) -> None:
    """Run bulk-load statements one by one, each logged with its duration."""

    async def run() -> None:
        async with _connect(url, command_timeout=command_timeout) as connection:
            await connection.execute("SET synchronous_commit = off")
            await connection.execute("SET maintenance_work_mem = '512MB'")
            for s in statements:
                t0 = time.monotonic()
                await connection.execute(s)
                log(f"  sql {time.monotonic() - t0:6.1f}s  {s.strip().splitlines()[0][:100]}")

    asyncio.run(run())


def fetch(url: str, query: str) -> list[Any]:
    """The rows (asyncpg records) of one query."""

    async def run() -> list[Any]:
        async with _connect(url) as connection:
            rows: list[Any] = await connection.fetch(query)
            return rows

    return asyncio.run(run())


SEARCH_WORDS_SQL = (
    "(ARRAY['invoice','groceries','dentist','report','garden','taxes','birthday','meeting'])"
)


def task_insert(first: int, last: int, user_expr: str, list_expr: str = "NULL") -> str:
    """INSERT of tasks number `first`..`last` (g), owned by `user_expr` and in list
    `list_expr` (SQL expressions of g), spread as bench/seeding.py's `seed_task` for the
    screens: titles open with a search word, due dates in the past and in 2031."""
    # completed (g%2) and priority (g%3) are independent; created_at increases with g; due
    # dates (odd g) over two years from 2025-07-01: about half of them past.
    return f"""INSERT INTO tasks (title, description, completed, priority, due_date, user_id,
        list_id, created_at, updated_at, completed_at)
    SELECT {SEARCH_WORDS_SQL}[g % 8 + 1] || ': scale task ' || g,
           CASE WHEN g % 3 = 0 THEN NULL ELSE 'generated description ' || g END,
           g % 2 = 0, (ARRAY['low','medium','high'])[g % 3 + 1],
           CASE WHEN g % 2 = 0 THEN NULL
                ELSE timestamptz '2025-07-01' + (g % 730) * interval '1 day' END,
           {user_expr}, {list_expr},
           timestamptz '2024-01-01' + g * interval '1 second',
           timestamptz '2024-01-01' + g * interval '1 second',
           CASE WHEN g % 2 = 0 THEN timestamptz '2024-01-01' + g * interval '1 second' END
    FROM generate_series({first}, {last}) AS g"""


def label_insert(after_id: int) -> str:
    """A fifth of the tasks with ids after `after_id` labelled "errands"."""
    return f"""INSERT INTO task_labels (task_id, name_key, user_id, name, position)
    SELECT id, 'errands', user_id, 'errands', 0 FROM tasks WHERE id > {after_id} AND id % 5 = 0"""
