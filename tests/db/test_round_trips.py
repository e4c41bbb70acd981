"""Round trips to the database per request, counted on the wire: one per request wherever
one statement does the work, directly and through PgBouncer in transaction mode, and a
pooler found without being told."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager

from taskapi.app import create_app
from tests.conftest import make_settings
from tests.support.tokens import auth
from tests.support.wire import CountingProxy, Wire

BOTH = pytest.mark.parametrize("backend", ["postgresql", "pgbouncer"])

TASKS = "/api/v1/tasks"
ALICE = auth("alice")


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{port}"))


@dataclass
class Counted:
    client: httpx.AsyncClient
    wire: Wire

    async def round_trips(self, method: str, path: str, **kwargs: Any) -> tuple[int, int]:
        """The status of one request and the round trips it took."""
        self.wire.reset()
        kwargs["headers"] = {**ALICE, **kwargs.get("headers", {})}
        response = await self.client.request(method, path, **kwargs)
        return response.status_code, self.wire.round_trips


@pytest.fixture
async def counted(database_url: str) -> AsyncIterator[Counted]:
    upstream = urlsplit(database_url)
    assert upstream.hostname is not None
    async with CountingProxy(upstream.hostname, upstream.port or 5432) as proxy:
        app = create_app(make_settings(through(database_url, proxy.port)))
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield Counted(client, proxy.wire)


@BOTH
async def test_one_round_trip_per_request_of_a_known_user(counted: Counted) -> None:
    # The first requests open the connection, provision the user and prepare the statements.
    create: dict[str, Any] = {"json": {"title": "t", "priority": "high"}}
    warm = await counted.client.post(TASKS, headers=ALICE, **create)
    one = f"{TASKS}/{warm.json()['id']}"
    spare = (await counted.client.post(TASKS, headers=ALICE, **create)).json()["id"]
    await counted.client.get(one, headers=ALICE)
    await counted.client.get(f"{TASKS}?limit=5", headers=ALICE)
    await counted.client.put(one, headers=ALICE, json={"completed": True})
    await counted.client.delete(f"{TASKS}/{spare}", headers=ALICE)
    feed = (await counted.client.get(f"{TASKS}/changes", headers=ALICE)).json()
    since = f"{TASKS}/changes?since={feed['next']}"
    await counted.client.get(since, headers=ALICE)
    etag = (await counted.client.get(one, headers=ALICE)).headers["etag"]

    created = (await counted.client.post(TASKS, headers=ALICE, **create)).json()["id"]
    assert await counted.round_trips("GET", one) == (200, 1)
    assert await counted.round_trips("GET", one, headers={"If-None-Match": etag}) == (304, 1)
    assert await counted.round_trips("GET", f"{TASKS}?limit=5") == (200, 1)
    assert await counted.round_trips("POST", TASKS, **create) == (201, 1)
    assert await counted.round_trips("PUT", one, json={"completed": False}) == (200, 1)
    assert await counted.round_trips("DELETE", f"{TASKS}/{created}") == (204, 1)
    assert await counted.round_trips("GET", since) == (200, 1)


@BOTH
async def test_every_write_is_committed_before_its_reply(
    counted: Counted, database_url: str
) -> None:
    """Autocommit: what a 2xx acknowledged is visible to another connection at once."""
    import asyncpg

    response = await counted.client.post(TASKS, headers=ALICE, json={"title": "durable"})
    assert response.status_code == 201
    other = await asyncpg.connect(database_url, statement_cache_size=0)
    try:
        title = await other.fetchval("SELECT title FROM tasks WHERE id = $1", response.json()["id"])
        assert title == "durable"
        busy = await other.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
            " AND datname = current_database()"
        )
        assert busy == 0
    finally:
        await other.close()


@BOTH
async def test_a_pooler_is_found_without_configuration(
    counted: Counted, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind PgBouncer the service serves without DB_PREPARED_STATEMENTS, and says once
    that it found the pooler; directly, it says nothing."""
    with caplog.at_level(logging.WARNING, logger="taskapi.db"):
        for n in range(5):
            response = await counted.client.post(TASKS, headers=ALICE, json={"title": f"{n}"})
            assert response.status_code == 201
            assert (await counted.client.get(f"{TASKS}?limit=50", headers=ALICE)).status_code == 200
    found = [r for r in caplog.records if "connection pooler" in r.getMessage()]
    assert len(found) == (1 if backend == "pgbouncer" else 0)


async def test_pgbouncer_sends_the_server_nothing_but_the_statements(pg_url: str) -> None:
    """Between PgBouncer and PostgreSQL: each request is its statement alone, no `SET
    client_encoding` (asyncpg's 'utf-8' against the server's UTF8) and no BEGIN/COMMIT."""
    from tests.support.pgbouncer import PgBouncer

    upstream = urlsplit(pg_url)
    assert upstream.hostname is not None
    dbname = upstream.path.lstrip("/")
    async with CountingProxy(upstream.hostname, upstream.port or 5432) as proxy:
        # server_check_delay: no `select 1` of PgBouncer's own before each reuse here
        quiet = {"server_check_delay": 30}
        with PgBouncer("127.0.0.1", proxy.port, dbname=dbname, settings=quiet) as bouncer:
            bouncer.start()
            app = create_app(make_settings(bouncer.url("postgresql", dbname=dbname)))
            async with LifespanManager(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    made = await client.post(TASKS, headers=ALICE, json={"title": "t"})
                    one = f"{TASKS}/{made.json()['id']}"
                    await client.get(one, headers=ALICE)
                    await client.put(one, headers=ALICE, json={"title": "v"})
                    proxy.wire.reset()
                    for _ in range(3):
                        assert (await client.get(one, headers=ALICE)).status_code == 200
                    put = await client.put(one, headers=ALICE, json={"title": "u"})
                    assert put.status_code == 200
                    sent = proxy.wire.messages()
    queries = [body for kind, body in sent if kind == b"Q"]  # simple-protocol statements
    assert queries == []
    parsed = [body for kind, body in sent if kind == b"P"]
    assert len(parsed) == 4
    assert proxy.wire.round_trips == 4
