"""Startup: refuse an unmigrated PostgreSQL, migrate the SQLite default, and a real process."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import sys
import uuid
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from asgi_lifespan import LifespanManager

from taskapi.app import create_app
from taskapi.db import head_revision
from tests.conftest import make_settings
from tests.support import databases
from tests.support.tokens import auth

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_SECONDS = 60
CLEARED_ENV = (
    "DATABASE_URL",
    "JWT_SECRET",
    "JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_ALGORITHM",
    "JWT_ALGORITHMS",
    "CORS_ORIGINS",
    "REDIS_URL",
    "ENVIRONMENT",
    "SQLITE_PATH",
)


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


# --- (a) an unmigrated PostgreSQL is refused -----------------------------------------------


async def test_unmigrated_postgresql_refuses_to_start(pg_admin_url: str | None) -> None:
    if pg_admin_url is None:
        pytest.skip("PostgreSQL is not available: apt-get install postgresql")
    assert pg_admin_url is not None
    name = f"taskapi_unmigrated_{uuid.uuid4().hex[:10]}"
    await _admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    url = databases.with_database(pg_admin_url, name)
    try:
        app = create_app(make_settings(url))
        with pytest.raises(RuntimeError) as info:
            async with LifespanManager(app):
                pytest.fail("the service started on an unmigrated database")
        message = str(info.value)
        assert "alembic upgrade head" in message
        assert head_revision() in message
        # Refusing must not have created anything: no tables appeared.
        connection = await asyncpg.connect(url, timeout=10)
        try:
            tables = await connection.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        finally:
            await connection.close()
        assert tables == []
    finally:
        await _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- (b) the SQLite default is migrated at start -------------------------------------------


def _sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


def _sqlite_revision(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return str(connection.execute("SELECT version_num FROM alembic_version").fetchone()[0])


async def test_unmigrated_sqlite_is_migrated_at_start(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    sqlite3.connect(path).close()  # an existing but empty file
    assert _sqlite_tables(path) == set()
    app = create_app(make_settings(f"sqlite:///{path}"))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            created = await client.post(
                "/api/v1/tasks", json={"title": "after migration"}, headers=auth("alice")
            )
            assert created.status_code == 201, created.text
    assert {"users", "tasks", "alembic_version"} <= _sqlite_tables(path)
    assert _sqlite_revision(path) == head_revision()


async def test_missing_sqlite_file_is_created_from_sqlite_path(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "default.db"
    path.parent.mkdir()
    assert not path.exists()
    app = create_app(make_settings(None, sqlite_path=str(path)))
    async with LifespanManager(app):
        assert app.state.engine.url.database == str(path.resolve())
    assert {"users", "tasks", "alembic_version"} <= _sqlite_tables(path)
    # A second start on the migrated file is a no-op.
    again = create_app(make_settings(None, sqlite_path=str(path)))
    async with LifespanManager(again):
        pass
    assert _sqlite_revision(path) == head_revision()


# --- (c) a real process --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _process_env(sqlite_path: Path) -> dict[str, str]:
    """Nothing configured but the database file: the key comes from the development flow."""
    env = {key: value for key, value in os.environ.items() if key not in CLEARED_ENV}
    env["SQLITE_PATH"] = str(sqlite_path)
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def _wait_for_startup(process: asyncio.subprocess.Process) -> list[str]:
    """Read uvicorn's stderr until it reports startup complete (or the process exits)."""
    assert process.stderr is not None
    lines: list[str] = []

    async def read() -> None:
        assert process.stderr is not None
        while True:
            raw = await process.stderr.readline()
            if not raw:
                raise AssertionError("uvicorn exited before startup:\n" + "".join(lines))
            line = raw.decode(errors="replace")
            lines.append(line)
            if "Application startup complete" in line:
                return

    await asyncio.wait_for(read(), STARTUP_TIMEOUT_SECONDS)
    return lines


async def _drain(stream: asyncio.StreamReader | None) -> None:
    if stream is None:
        return
    while await stream.read(65536):
        pass


async def _run_module(module: str, *args: str, cwd: Path, env: dict[str, str]) -> str:
    """`python -m module args` to completion; its stdout (it must succeed)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_real_process_serves_tasks_with_devtoken(tmp_path: Path) -> None:
    """The development flow of `make run` and `make token` in a checkout with nothing
    configured: `taskapi.devsecret` writes a random secret to `.env`, the service and
    `taskapi.devtoken` both read it there."""
    port = _free_port()
    db_path = tmp_path / "real.db"
    env = _process_env(db_path)
    await _run_module("taskapi.devsecret", cwd=tmp_path, env=env)
    process = await asyncio.create_subprocess_exec(
        str(BIN / "uvicorn"),
        "main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    drains: list[asyncio.Task[None]] = []
    try:
        startup_log = await _wait_for_startup(process)
        assert not any("Traceback" in line for line in startup_log), "".join(startup_log)
        drains = [
            asyncio.create_task(_drain(process.stdout)),
            asyncio.create_task(_drain(process.stderr)),
        ]
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            health = await client.get("/health")
            assert health.status_code == 200
            assert health.json()["status"] == "healthy"
            ready = await client.get("/ready")
            assert ready.status_code == 200, ready.text

            token = (await _run_module("taskapi.devtoken", "alice", cwd=tmp_path, env=env)).strip()
            headers = {"Authorization": f"Bearer {token}"}

            unauthenticated = await client.get("/api/v1/tasks")
            assert unauthenticated.status_code == 401
            assert unauthenticated.json()["code"] == "MISSING_TOKEN"

            created = await client.post(
                "/api/v1/tasks", json={"title": "from a real process"}, headers=headers
            )
            assert created.status_code == 201, created.text
            task = created.json()
            assert task["user_id"] == "alice"
            assert created.headers["location"] == f"/api/v1/tasks/{task['id']}"

            read = await client.get(f"/api/v1/tasks/{task['id']}", headers=headers)
            assert read.status_code == 200, read.text
            assert read.json()["title"] == "from a real process"
            listed = await client.get("/api/v1/tasks", headers=headers)
            assert [item["id"] for item in listed.json()] == [task["id"]]
        assert db_path.exists()
        assert {"users", "tasks"} <= _sqlite_tables(db_path)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        for drain in drains:
            drain.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
