"""The request's unit of work, and queries compiled once for every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.base import Executable

Row = dict[str, Any]
Params = Mapping[str, Any]

_POSTGRES = asyncpg_dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Query:
    """A SQLAlchemy statement, and its PostgreSQL SQL compiled once (`$1..$n`).

    `rendered`, if set, is the same query returning its rows already serialized: rows of
    `id` and `json` (the row's JSON document, as bytes). A unit of work opened with
    `rendered=True` runs it instead. PostgreSQL builds the JSON in its own SQL variant;
    other backends run the generic statement and `shape` each row in Python. So a query
    with a `shape` is such a rendered variant, and its PostgreSQL rows are `(id, json)`.
    """

    statement: Executable
    sql: str
    names: tuple[str, ...]
    rendered: Query | None = None
    shape: Callable[[Row], Row] | None = None

    @classmethod
    def of(
        cls,
        statement: Executable,
        postgres: Executable | None = None,
        *,
        rendered: Query | None = None,
        shape: Callable[[Row], Row] | None = None,
    ) -> Query:
        """Compile `statement` (or a PostgreSQL-specific variant of it) for asyncpg."""
        source: Any = postgres if postgres is not None else statement
        compiled = source.compile(dialect=_POSTGRES)
        names = tuple(compiled.positiontup or ())
        return cls(statement, compiled.string, names, rendered, shape)


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
        rows = await self.fetch_all(query, params)
        return rows[0] if rows else None

    async def fetch_all(self, query: Query, params: Params) -> list[Row]:
        result = await self.connection.execute(query.statement, dict(params))
        # Plain `str` keys, as asyncpg's: SQLAlchemy's are a `str` subclass (`quoted_name`).
        names = [str(name) for name in result.keys()]  # noqa: SIM118 (a Result)
        rows = [dict(zip(names, row, strict=True)) for row in result]
        shape = query.shape
        return rows if shape is None else [shape(row) for row in rows]


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

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


SESSION_KEY = "taskapi.session"


class UnitOfWork(_Callbacks):
    """The request's session, opened lazily: no connection is taken until the first query,
    so a request refused before it (a bad token, a rate limit) never waits for the pool.

    With `rendered=True`, queries that have a `rendered` variant run it: their rows come
    back as `{"id": ..., "json": b"..."}`, serialized by the database where it can."""

    __slots__ = ("_context", "_database", "_rendered", "_session")

    def __init__(self, database: Database, *, rendered: bool = False) -> None:
        super().__init__()
        self._database = database
        self._rendered = rendered
        self._context: AbstractAsyncContextManager[DBSession] | None = None
        self._session: DBSession | None = None

    async def _open(self) -> DBSession:
        if self._session is None:
            context = self._database.session()
            self._session = await context.__aenter__()
            self._context = context
        return self._session

    def _variant(self, query: Query) -> Query:
        return query.rendered if self._rendered and query.rendered is not None else query

    async def fetch_one(self, query: Query, params: Params) -> Row | None:
        return await (await self._open()).fetch_one(self._variant(query), params)

    async def fetch_all(self, query: Query, params: Params) -> list[Row]:
        return await (await self._open()).fetch_all(self._variant(query), params)

    async def finish(self, error: BaseException | None) -> None:
        """Commit (no error) or roll back; then, if committed, run the callbacks."""
        context, self._context, self._session = self._context, None, None
        if context is not None:
            if error is None:
                await context.__aexit__(None, None, None)
            else:
                await context.__aexit__(type(error), error, error.__traceback__)
        if error is None:
            self.run_callbacks()


class UnitOfWorkRoute(APIRoute):
    """Routes whose request runs in one `UnitOfWork`: the one place that commits or rolls
    back. The commit completes before the response is sent, so a 2xx is only ever sent for
    a committed write."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run_in_unit_of_work(request: Request) -> Response:
            work = UnitOfWork(request.app.services.db)
            request.scope[SESSION_KEY] = work
            try:
                response = await handler(request)
            except BaseException as error:
                await work.finish(error)
                raise
            await work.finish(None)
            return response

        return run_in_unit_of_work


async def get_session(request: Request) -> DBSession:
    """The request's unit of work (see `UnitOfWorkRoute`)."""
    session: DBSession = request.scope[SESSION_KEY]
    return session


Session = Annotated[DBSession, Depends(get_session)]
