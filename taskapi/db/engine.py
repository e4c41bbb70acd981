"""SQLAlchemy engines: the SQLite default's, and the ones migrations and admin tasks use."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from taskapi import search
from taskapi.config import Settings
from taskapi.db.url import resolve_database_url


def _install_sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()
        # `sort=relevance` (taskapi.search): a function of the task and the query alone.
        dbapi_connection.create_function("taskapi_rank", 3, search.rank, deterministic=True)


def create_engine(settings: Settings, *, statement_timeout: bool = True) -> AsyncEngine:
    """An SQLAlchemy engine on DATABASE_URL.

    On SQLite it serves requests. On PostgreSQL requests go through the asyncpg pool of
    `PostgresDatabase`; this engine (no pool of its own) serves migrations and admin tasks.
    `statement_timeout=False` (migrations) leaves PostgreSQL statements without the
    requests' DB_STATEMENT_TIMEOUT_SECONDS: an index built concurrently takes as long as its
    table needs, and `lock_timeout` bounds its waits.
    """
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
    connect_args = dict(resolved.connect_args)
    if not statement_timeout:
        del connect_args["command_timeout"]
    url = resolved.url
    if resolved.behind_transaction_pooler is not False:
        # SQLAlchemy prepares statements itself: give them unique names behind a pooler, or
        # where one may be (its few statements, migrations and admin tasks, cost nothing).
        connect_args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
    return create_async_engine(url, connect_args=connect_args, poolclass=NullPool)
