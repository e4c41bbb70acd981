"""Fixtures: an app per test on each backend (SQLite, PostgreSQL, PostgreSQL via PgBouncer);
and the rule that with CI=true nothing skips."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from taskapi.app import create_app
from taskapi.config import Settings
from tests.support import databases
from tests.support.tokens import TEST_SECRET

BACKENDS = ("sqlite", "postgresql", "pgbouncer")
IN_CI = os.environ.get("CI") == "true"


# --- with CI=true any skip fails the run --------------------------------------------------
# Tests skip where a dependency is missing (`pytest.skip` with a message saying what to
# install); these two hooks are the one place that turns every skip, of a test or of a whole
# module, into a failure in CI, so a run that tested less than it claims cannot pass there.
# (An expected failure, `xfail`, is not a skip.)


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _fail_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.longrepr = f"CI=true: nothing may skip, and this skipped: {_skip_reason(report)}"
        report.outcome = "failed"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_skip(report)
    return report


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A PostgreSQL to create test databases in: TEST_DATABASE_URL, the local server on
    127.0.0.1:5432, or a throwaway cluster started from the local binaries."""
    url = os.environ.get("TEST_DATABASE_URL", databases.DEFAULT_ADMIN_URL)
    if databases.reachable(url):
        yield url
        return
    from tests.support.pgcluster import PrivateCluster, find_pg_bindir

    if find_pg_bindir() is None:
        yield None
        return
    with PrivateCluster() as cluster:
        cluster.start()
        yield cluster.url("postgresql")


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str | None) -> Iterator[str]:
    """A migrated database for this test run (built with `alembic upgrade head`)."""
    if pg_admin_url is None:
        pytest.skip(
            "PostgreSQL is not available: install it (apt-get install postgresql) or set "
            "TEST_DATABASE_URL=postgresql://user@host:port/db"
        )
    assert pg_admin_url is not None
    url = databases.create_database(pg_admin_url)
    yield url
    databases.drop_database(pg_admin_url, url)


@pytest.fixture(scope="session")
def pgbouncer_url(pg_url: str) -> Iterator[str]:
    """The same database through PgBouncer in transaction mode (Neon's pooled endpoint)."""
    from tests.support.pgbouncer import PgBouncer, find_pgbouncer

    if find_pgbouncer() is None:
        pytest.skip("PgBouncer is not installed: apt-get install pgbouncer")
    host_port = pg_url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    dbname = pg_url.partition("?")[0].rsplit("/", 1)[1]
    with PgBouncer(host, int(port or 5432), dbname=dbname) as bouncer:
        bouncer.start()
        yield bouncer.url("postgresql", dbname=dbname)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    databases.alembic_upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[str]:
    """An empty, migrated database on the test's backend."""
    if backend == "sqlite":
        yield f"sqlite:///{databases.copy_sqlite(sqlite_template, tmp_path / 'test.db')}"
        return
    url = request.getfixturevalue("pg_url")
    if backend == "pgbouncer":
        yield request.getfixturevalue("pgbouncer_url")
    else:
        yield url
    await databases.truncate(url)


def make_settings(database_url: str | None, **overrides: Any) -> Settings:
    """Test settings: never read from the developer's `.env`."""
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "jwt_secret": TEST_SECRET,
        "rate_limit_enabled": False,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings for its app."""
    return {}


@pytest.fixture
def settings(database_url: str, backend: str, settings_overrides: dict[str, Any]) -> Settings:
    overrides = dict(settings_overrides)
    return make_settings(database_url, **overrides)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
