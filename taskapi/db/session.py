"""The request's unit of work, and queries compiled once for every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.base import Executable

Row = dict[str, Any]
Params = Mapping[str, Any]

_POSTGRES = asyncpg_dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Query:
    """A SQLAlchemy statement, and its PostgreSQL SQL compiled once (`$1..$n`)."""

    statement: Executable
    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: Executable, postgres: Executable | None = None) -> Query:
        """Compile `statement` (or a PostgreSQL-specific variant of it) for asyncpg."""
        source: Any = postgres if postgres is not None else statement
        compiled = source.compile(dialect=_POSTGRES)
        return cls(statement, compiled.string, tuple(compiled.positiontup or ()))


class DBSession(Protocol):
    """What services use: run queries, and act once the work is committed."""

    async def fetch_one(self, query: Query, params: Params) -> Row | None: ...

    async def fetch_all(self, query: Query, params: Params) -> list[Row]: ...

    def after_commit(self, callback: Callable[[], None]) -> None: ...


class Database(Protocol):
    """A backend: hands out sessions that commit on success and roll back on error."""

    engine: AsyncEngine

    def session(self) -> AbstractAsyncContextManager[DBSession]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class _Callbacks:
    __slots__ = ("_callbacks",)

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the work has committed (e.g. to fill a cache)."""
        self._callbacks.append(callback)

    def run_callbacks(self) -> None:
        for callback in self._callbacks:
            callback()


class SQLAlchemySession(_Callbacks):
    """A session on an SQLAlchemy connection (the SQLite default)."""

    __slots__ = ("connection",)

    def __init__(self, connection: AsyncConnection) -> None:
        super().__init__()
        self.connection = connection

    async def fetch_one(self, query: Query, params: Params) -> Row | None:
        result = await self.connection.execute(query.statement, dict(params))
        row = result.mappings().first()
        return None if row is None else dict(row)

    async def fetch_all(self, query: Query, params: Params) -> list[Row]:
        result = await self.connection.execute(query.statement, dict(params))
        return [dict(row) for row in result.mappings()]


class SQLiteDatabase:
    """The embedded default: SQLAlchemy over aiosqlite, one transaction per request."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def session(self) -> AsyncIterator[DBSession]:
        async with self.engine.connect() as connection:
            session = SQLAlchemySession(connection)
            try:
                yield session
            except BaseException:
                await connection.rollback()
                raise
            await connection.commit()
            session.run_callbacks()

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


async def get_session(request: Request) -> AsyncIterator[DBSession]:
    """Yield the request's session; it commits on success and rolls back on any error.

    Declared with `scope="function"`, so the commit finishes before the response is sent:
    a 2xx is only ever sent for a committed write.
    """
    database: Database = request.app.state.db
    async with database.session() as session:
        yield session


Session = Annotated[DBSession, Depends(get_session, scope="function")]
