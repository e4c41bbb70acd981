"""Self-tests of the PrivateCluster / PgBouncer test helpers (fast: a few seconds)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from .pgbouncer import PgBouncer, require_pgbouncer
from .pgcluster import PrivateCluster, require_pg_bindir

SSL_QUERY = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def cluster():
    require_pg_bindir()
    with PrivateCluster(ssl=True, password_user=("app", "app-secret")) as pg:
        yield pg


@pytest.fixture(scope="module")
def bouncer(cluster):
    require_pgbouncer()
    with PgBouncer.for_cluster(cluster, default_pool_size=2) as b:
        yield b


async def _fetchval(dsn: str, sql: str, *args, **kw):
    conn = await asyncpg.connect(dsn, timeout=10, **kw)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def test_connect_plain(cluster):
    assert asyncio.run(_fetchval(cluster.dsn(), "SELECT 40 + $1::int", 2)) == 42


def test_ssl_require_with_password(cluster):
    dsn = cluster.url(user="app", sslmode="require")
    assert "app-secret" in dsn
    assert asyncio.run(_fetchval(dsn, SSL_QUERY)) is True
    assert asyncio.run(_fetchval(cluster.dsn(), "SELECT current_user", ssl="require")) == "postgres"


def test_password_is_checked(cluster):
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(_fetchval(cluster.url(user="app", password="wrong"), "SELECT 1"))


def test_sqlalchemy_ssl_require(cluster):
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run():
        # SQLAlchemy passes URL query args to asyncpg.connect() as kwargs, so
        # the asyncpg spelling is ?ssl=require (not sslmode=require).
        engine = create_async_engine(cluster.url("postgresql+asyncpg", user="app", ssl="require"))
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text(SSL_QUERY))).scalar()
        finally:
            await engine.dispose()

    assert asyncio.run(run()) is True


def test_create_database(cluster):
    name = f"db_{uuid.uuid4().hex[:8]}"
    cluster.create_database(name)
    assert asyncio.run(_fetchval(cluster.dsn(dbname=name), "SELECT current_database()")) == name
    cluster.drop_database(name)


def test_stop_start_kill():
    require_pg_bindir()
    with PrivateCluster() as pg:
        dsn = pg.dsn()
        assert pg.is_running
        pg.stop()
        assert not pg.is_running
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(_fetchval(dsn, "SELECT 1"))
        pg.start()
        assert asyncio.run(_fetchval(dsn, "SELECT 1")) == 1
        pg.kill()
        assert not pg.is_running
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(_fetchval(dsn, "SELECT 1"))
        pg.restart(mode="immediate")
        assert asyncio.run(_fetchval(dsn, "SELECT 1")) == 1


def test_fast_shutdown_breaks_open_connection():
    require_pg_bindir()
    with PrivateCluster() as pg:

        async def run():
            conn = await asyncpg.connect(pg.dsn())
            busy = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)"))
            await asyncio.sleep(0.2)  # let the query reach the server
            await asyncio.to_thread(pg.stop, "fast")
            with pytest.raises(asyncpg.ConnectionDoesNotExistError):
                await asyncio.wait_for(busy, 10)
            assert conn.is_closed()

        asyncio.run(run())


def test_bouncer_query(bouncer):
    assert bouncer.config["pool_mode"] == "transaction"
    dsn = bouncer.url()
    assert asyncio.run(_fetchval(dsn, "SELECT 1 + $1::int", 1, statement_cache_size=0)) == 2
    # password user: trust towards the client, scram towards PostgreSQL
    assert (
        asyncio.run(
            _fetchval(bouncer.url(user="app"), "SELECT current_user", statement_cache_size=0)
        )
        == "app"
    )
    pools = bouncer.admin("SHOW POOLS")
    assert any(p["pool_mode"] == "transaction" for p in pools)


def test_bouncer_statement_cache_size_zero_transaction_pooling(bouncer):
    """Many client connections share 2 server connections; no prepared-statement errors."""

    async def run():
        conns = [
            await asyncpg.connect(bouncer.url(), statement_cache_size=0, timeout=10)
            for _ in range(8)
        ]
        try:

            async def work(c, i):
                for j in range(25):
                    assert await c.fetchval("SELECT $1::int * 2", i * 100 + j) == (i * 100 + j) * 2
                    async with c.transaction():
                        await c.execute("SELECT pg_advisory_xact_lock($1)", i)
                        assert await c.fetchval("SELECT $1::text || 'x'", str(j)) == f"{j}x"

            await asyncio.gather(*(work(c, i) for i, c in enumerate(conns)))
        finally:
            for c in conns:
                await c.close()

    asyncio.run(run())


def test_bouncer_sqlalchemy_settings(bouncer, cluster):
    """The create_async_engine settings recommended for transaction pooling."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    cluster.psql(
        "CREATE TABLE IF NOT EXISTS infra_t (id bigserial primary key, title text not null)"
    )

    async def run():
        engine = create_async_engine(
            bouncer.url("postgresql+asyncpg", prepared_statement_cache_size="0"),
            pool_size=10,
            max_overflow=0,
            connect_args={
                "statement_cache_size": 0,
                "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
            },
        )
        try:

            async def work(i):
                for j in range(10):
                    async with engine.begin() as conn:
                        new_id = (
                            await conn.execute(
                                text("INSERT INTO infra_t (title) VALUES (:t) RETURNING id"),
                                {"t": f"{i}-{j}"},
                            )
                        ).scalar_one()
                        title = (
                            await conn.execute(
                                text("SELECT title FROM infra_t WHERE id = :id"), {"id": new_id}
                            )
                        ).scalar_one()
                        assert title == f"{i}-{j}"

            await asyncio.gather(*(work(i) for i in range(10)))
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_bouncer_shared_cluster():
    """PgBouncer in front of the shared 127.0.0.1:5432 cluster (skipped if absent)."""
    require_pgbouncer()
    from .pgcluster import port_is_open

    if not port_is_open("127.0.0.1", 5432):
        pytest.skip(
            "no PostgreSQL on 127.0.0.1:5432: apt-get install postgresql and start its cluster"
        )
    with PgBouncer(upstream_port=5432) as b:
        try:
            val = asyncio.run(
                _fetchval(b.url(dbname="test"), "SELECT current_database()", statement_cache_size=0)
            )
        except (
            asyncpg.InvalidCatalogNameError,
            asyncpg.InvalidAuthorizationSpecificationError,
        ) as e:
            pytest.skip(
                f"the PostgreSQL on 127.0.0.1:5432 has no database `test` open to user "
                f"postgres through PgBouncer: {e}"
            )
        assert val == "test"
