"""Where the tests' PostgreSQL comes from, and per-test isolation on each backend."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _can_connect(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


def reachable(url: str) -> bool:
    """Whether a PostgreSQL answers at `url`."""
    return run_sync(_can_connect(url))


def alembic_upgrade(database_url: str) -> None:
    """Build the schema exactly as a user does: `alembic upgrade head`."""
    env = {**os.environ, "DATABASE_URL": database_url, "ENVIRONMENT": "test"}
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run(
        [str(alembic), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{result.stderr[-3000:]}")


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name`."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


async def _admin(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def create_database(admin_url: str, prefix: str = "taskapi_test") -> str:
    """A fresh, migrated database; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    run_sync(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    url = with_database(admin_url, name)
    alembic_upgrade(url)
    return url


def drop_database(admin_url: str, url: str) -> None:
    name = url.partition("?")[0].rsplit("/", 1)[1]
    run_sync(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def truncate(url: str) -> None:
    """Empty every table (each test starts from an empty, migrated database)."""
    await _admin(url, "TRUNCATE tasks, users RESTART IDENTITY CASCADE")


def copy_sqlite(template: Path, target: Path) -> Path:
    shutil.copyfile(template, target)
    return target
