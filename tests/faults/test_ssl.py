"""TLS to PostgreSQL with a Neon-style DATABASE_URL, and certificate verification.

PrivateCluster(ssl=True) generates a self-signed certificate with CN=localhost and
SubjectAltName DNS:localhost + IP:127.0.0.1 (and CA:TRUE), so it can serve as its own
root for `sslmode=verify-full` against 127.0.0.1 or localhost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import text

from taskapi.db import Query
from tests.conftest import make_settings
from tests.faults._support import SHORT_TIMEOUTS, TASKS, postgres, serve
from tests.support.databases import alembic_upgrade
from tests.support.pgcluster import PrivateCluster, require_pg_bindir
from tests.support.tokens import auth

pytestmark = pytest.mark.slow

DBNAME = "taskapi_ssl"
USER, PASSWORD = "app", "pw"
IS_SSL = text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
LOGGED_IN_AS = text("SELECT current_user")


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    require_pg_bindir()
    with PrivateCluster(ssl=True, password_user=(USER, PASSWORD)) as pg:
        pg.create_database(DBNAME, owner=USER)
        alembic_upgrade(pg.url("postgresql", dbname=DBNAME, user=USER, sslmode="require"))
        yield pg


def app_url(pg: PrivateCluster, host: str = "127.0.0.1", **query: str) -> str:
    params = "&".join(f"{key}={quote(value, safe='')}" for key, value in query.items())
    return f"postgresql://{USER}:{PASSWORD}@{host}:{pg.port}/{DBNAME}?{params}"


async def check_works_and_encrypted(url: str, expect_ssl: bool = True) -> None:
    async with asyncio.timeout(30), serve(make_settings(url, **SHORT_TIMEOUTS)) as (app, client):
        headers = auth("ssl-user")
        created = await client.post(TASKS, json={"title": "over TLS"}, headers=headers)
        assert created.status_code == 201, created.text
        fetched = await client.get(f"{TASKS}/{created.json()['id']}", headers=headers)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["title"] == "over TLS"
        # Ask through the serving pool itself, not a side connection.
        async with postgres(app).session() as session:
            ssl_row = await session.fetch_one(Query.of(IS_SSL), {})
            user_row = await session.fetch_one(Query.of(LOGGED_IN_AS), {})
        assert ssl_row is not None
        assert user_row is not None
        assert next(iter(ssl_row.values())) is expect_ssl
        assert next(iter(user_row.values())) == USER


async def test_neon_style_url_require_with_channel_binding(cluster: PrivateCluster) -> None:
    await check_works_and_encrypted(app_url(cluster, sslmode="require", channel_binding="require"))


async def test_sslmode_disable_is_really_plain(cluster: PrivateCluster) -> None:
    """The control case: the pg_stat_ssl check above can tell TLS from plain TCP."""
    await check_works_and_encrypted(app_url(cluster, sslmode="disable"), expect_ssl=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_verify_full_with_root_cert(cluster: PrivateCluster, host: str) -> None:
    assert cluster.ssl_cert_path is not None
    await check_works_and_encrypted(
        app_url(cluster, host=host, sslmode="verify-full", sslrootcert=str(cluster.ssl_cert_path))
    )


async def test_verify_full_refuses_an_unknown_certificate(
    cluster: PrivateCluster, tmp_path
) -> None:
    """verify-full really verifies: another CA's certificate makes startup fail."""
    from tests.support.pgcluster import generate_self_signed_cert

    other_cert, other_key = tmp_path / "other.crt", tmp_path / "other.key"
    generate_self_signed_cert(other_cert, other_key)
    url = app_url(cluster, sslmode="verify-full", sslrootcert=str(other_cert))
    with pytest.raises(Exception) as raised:  # noqa: PT011 - any failure; checked below
        async with asyncio.timeout(30), serve(make_settings(url, **SHORT_TIMEOUTS)):
            pass
    chain = []
    error: BaseException | None = raised.value
    while error is not None:
        chain.append(repr(error))
        error = error.__cause__ or error.__context__
    assert any("CERTIFICATE_VERIFY_FAILED" in item for item in chain), chain
