"""The embedded default: SQLAlchemy over aiosqlite, one transaction per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskapi.db.backend import Connection, PoolUsage
from taskapi.db.query import Params, Query

R = TypeVar("R")


class SQLAlchemyConnection:
    """Queries on an SQLAlchemy connection: each row as a mapping, then the query's type.
    Always in a transaction (SQLAlchemy begins one with the first statement)."""

    __slots__ = ("_held", "_locks", "connection")

    def __init__(self, connection: AsyncConnection, locks: set[int]) -> None:
        self.connection = connection
        self._locks = locks
        self._held: list[int] = []

    async def begin(self) -> None:
        pass

    async def try_lock(self, key: int) -> bool:
        """The lock within this process: SQLite is the embedded, single-process default."""
        if key in self._locks:
            return False
        self._locks.add(key)
        self._held.append(key)
        return True

    def release_locks(self) -> None:
        for key in self._held:
            self._locks.discard(key)

    async def fetch_one(self, query: Query[R], params: Params) -> R | None:
        rows = await self.fetch_all(query, params)
        return rows[0] if rows else None

    async def fetch_all(self, query: Query[R], params: Params) -> list[R]:
        result = await self.connection.execute(query.statement, dict(params))
        # Plain `str` keys, as asyncpg's: SQLAlchemy's are a `str` subclass (`quoted_name`).
        names = [str(name) for name in result.keys()]  # noqa: SIM118 (a Result)
        decode = query.from_columns
        return [decode(dict(zip(names, row, strict=True))) for row in result]


class SQLiteDatabase:
    """SQLite through SQLAlchemy's pool; each session is one transaction."""

    def __init__(self, engine: AsyncEngine, *, retry_after: int) -> None:
        self.engine = engine
        self.retry_after = retry_after
        self._locks: set[int] = set()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Connection]:
        async with self.engine.connect() as connection:
            session = SQLAlchemyConnection(connection, self._locks)
            try:
                yield session
            except BaseException:
                await connection.rollback()
                raise
            else:
                await connection.commit()
            finally:
                session.release_locks()

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    def pool_usage(self) -> PoolUsage | None:
        return None  # SQLAlchemy's pool; no metrics for the embedded default

    async def close(self) -> None:
        await self.engine.dispose()
