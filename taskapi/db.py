"""Engine, connection pool and the request-scoped session that owns the transaction."""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, Request
from sqlalchemy import event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from taskapi.config import ConfigError, Settings

logger = logging.getLogger("taskapi.db")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

_PG_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg"}
# libpq parameters we translate; others are dropped with a warning.
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


@dataclass(frozen=True)
class ResolvedURL:
    """A DATABASE_URL translated for SQLAlchemy's async drivers."""

    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)
    prepared_statements: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"


def _ssl_argument(mode: str, root_cert: str | None) -> bool | str | ssl.SSLContext:
    """asyncpg's `ssl` argument for a libpq `sslmode`."""
    if mode == "disable":
        return False
    if mode in ("allow", "prefer", "require"):
        return mode  # encrypted, certificate not verified: libpq's meaning of these modes
    context = ssl.create_default_context(cafile=root_cert)
    context.check_hostname = mode == "verify-full"
    return context


def resolve_database_url(settings: Settings) -> ResolvedURL:
    """Map the spec's `postgresql://...?sslmode=require` (or unset: SQLite) to the async drivers."""
    if settings.database_url is None:
        path = Path(settings.sqlite_path).expanduser().resolve()
        return ResolvedURL(URL.create("sqlite+aiosqlite", database=str(path)))
    raw = settings.database_url.strip()
    scheme = urlsplit(raw).scheme.lower()
    if scheme.startswith("sqlite"):
        url = make_url(raw).set(drivername="sqlite+aiosqlite")
        return ResolvedURL(url)
    if scheme not in _PG_SCHEMES:
        raise ConfigError(
            f"DATABASE_URL scheme {scheme!r} is not supported: use postgresql://user:password@host"
            "/database?sslmode=require, or leave DATABASE_URL unset for the SQLite default."
        )
    # Parse the query ourselves: asyncpg does not take libpq's parameters as keywords.
    base, _, query = raw.partition("?")
    url = make_url(base).set(drivername="postgresql+asyncpg")
    params = dict(parse_qsl(query, keep_blank_values=True))
    connect_args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout_seconds,
        "command_timeout": settings.db_statement_timeout_seconds,
    }
    sslmode = params.pop("sslmode", "prefer").lower()
    if sslmode not in _SSL_MODES:
        raise ConfigError(f"DATABASE_URL sslmode={sslmode!r} is not one of {sorted(_SSL_MODES)}")
    connect_args["ssl"] = _ssl_argument(sslmode, params.pop("sslrootcert", None))
    # asyncpg authenticates with SCRAM but without channel binding; the TLS requirement above
    # still holds. Neon's URLs carry channel_binding=require, so accept and drop it.
    params.pop("channel_binding", None)
    if "connect_timeout" in params:
        connect_args["timeout"] = float(params.pop("connect_timeout"))
    if "application_name" in params:
        connect_args.setdefault("server_settings", {})["application_name"] = params.pop(
            "application_name"
        )
    if params:
        logger.warning("DATABASE_URL parameters ignored: %s", ", ".join(sorted(params)))
    host = url.host or ""
    prepared = settings.db_prepared_statements
    if prepared is None:
        prepared = "-pooler" not in host  # Neon's pooled endpoint is PgBouncer, transaction mode
    if not prepared:
        # PgBouncer in transaction mode: no statement cache, and unique names for the
        # unnamed statements asyncpg still prepares, so two clients never collide.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
    return ResolvedURL(url, connect_args, prepared_statements=prepared)


def _install_sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


def _install_idle_ping(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a pooled connection only if it sat idle, so a restarted server costs no error.

    A ping per checkout would add a round trip to every request; under load connections
    are never idle, so this costs nothing where speed matters.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError("stale pooled connection") from error


def single_statement_autocommit(settings: Settings) -> bool:
    """Whether requests run in autocommit: on a direct PostgreSQL connection.

    Every request is one statement (plus, on a user's first sight, an idempotent upsert),
    and a single statement is atomic, so BEGIN and COMMIT would only add two round trips.
    Behind PgBouncer in transaction mode statements must stay inside a transaction, so
    there (and on SQLite) the session keeps an explicit transaction.
    """
    resolved = resolve_database_url(settings)
    return not resolved.is_sqlite and resolved.prepared_statements


def create_engine(settings: Settings, *, autocommit: bool = False) -> AsyncEngine:
    """The one engine of the process, sized and timed from settings."""
    resolved = resolve_database_url(settings)
    if resolved.is_sqlite:
        engine = create_async_engine(
            resolved.url,
            connect_args={"timeout": settings.db_statement_timeout_seconds},
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        _install_sqlite_pragmas(engine)
        return engine
    engine = create_async_engine(
        resolved.url,
        connect_args=resolved.connect_args,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=1800,
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )
    if settings.db_idle_ping_seconds > 0:
        _install_idle_ping(engine, settings.db_idle_ping_seconds)
    return engine


class DBSession:
    """The request's unit of work: one connection, committed or rolled back in one place.

    In autocommit mode (see `single_statement_autocommit`) each statement commits as it
    runs; the commit below is then a no-op and the after-commit callbacks still run last.
    """

    __slots__ = ("_after_commit", "connection")

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the transaction has committed (e.g. to fill a cache)."""
        self._after_commit.append(callback)

    @property
    def dialect_name(self) -> str:
        return self.connection.dialect.name


async def get_session(request: Request) -> AsyncIterator[DBSession]:
    """Yield the request's session; commit on success, roll back on any error.

    Declared with `scope="function"`, so the commit finishes before the response is sent:
    a 2xx is only ever sent for a committed write.
    """
    engine: AsyncEngine = request.app.state.engine
    async with engine.connect() as connection:
        session = DBSession(connection)
        try:
            yield session
        except BaseException:
            await connection.rollback()
            raise
        await connection.commit()
        for callback in session._after_commit:
            callback()


Session = Annotated[DBSession, Depends(get_session, scope="function")]


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The Alembic revision the database is at, or None if it was never migrated."""
    async with engine.connect() as connection:
        try:
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        except exc.DBAPIError:
            return None
        row = result.first()
        return None if row is None else str(row[0])


def head_revision() -> str:
    """The newest migration's revision."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Run `alembic upgrade head` on this engine (used for the embedded SQLite default)."""
    from alembic import command
    from alembic.config import Config

    def _upgrade(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def ensure_schema(engine: AsyncEngine, *, migrate: bool) -> None:
    """Migrate (SQLite default) or refuse to start on an out-of-date schema."""
    head = head_revision()
    current = await schema_revision(engine)
    if current == head:
        return
    if migrate:
        logger.info("migrating the database from %s to %s", current, head)
        await upgrade_to_head(engine)
        return
    raise RuntimeError(
        f"The database schema is at revision {current or 'none (empty database)'}, "
        f"this service needs {head}: run `alembic upgrade head` with the same DATABASE_URL."
    )
