"""PostgreSQL through asyncpg connections: the hot path.

Statements are SQLAlchemy Core, compiled once (`Query`), and executed on asyncpg directly:
through SQLAlchemy each query would cost several times the CPU (see docs/design.md,
"Database connections").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from taskapi.config import Settings
from taskapi.db.backend import PoolUsage
from taskapi.db.failures import broke_connection, is_unavailable
from taskapi.db.query import Params, Query
from taskapi.db.slots import Slots
from taskapi.db.url import ResolvedURL

logger = logging.getLogger("taskapi.db")
R = TypeVar("R")


class PostgresConnection:
    """Queries on one pooled asyncpg connection; each record becomes the query's type."""

    __slots__ = ("connection",)

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def fetch_one(self, query: Query[R], params: Params) -> R | None:
        record = await self.connection.fetchrow(query.sql, *query.arguments(params))
        return None if record is None else query.from_record(record)

    async def fetch_all(self, query: Query[R], params: Params) -> list[R]:
        records = await self.connection.fetch(query.sql, *query.arguments(params))
        decode = query.from_record
        return [decode(record) for record in records]


class _PooledSession:
    """One request's connection: a transaction around it behind a transaction pooler, none
    (autocommit) on a direct connection (`ResolvedURL.behind_transaction_pooler`). A class
    rather than a generator-based context manager: this runs on every request."""

    __slots__ = ("_connection", "_database", "_transaction")

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._transaction: Any = None

    async def __aenter__(self) -> PostgresConnection:
        database = self._database
        connection = self._connection = await database._checkout()
        if database._transactional:
            try:
                self._transaction = connection.transaction()
                await self._transaction.start()
            except BaseException as error:
                database._checkin(connection, error)
                raise
        return PostgresConnection(connection)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        error = exc
        try:
            if self._transaction is not None:
                if exc is None:
                    await self._transaction.commit()
                else:
                    await self._transaction.rollback()
        except BaseException as failure:
            error = failure
            raise
        finally:
            self._database._checkin(self._connection, error)


# Connections idle longer than this are closed (checked every IDLE_CHECK_SECONDS), so an
# idle service holds no connections, as with asyncpg's `max_inactive_connection_lifetime`.
IDLE_LIFETIME_SECONDS = 300.0
IDLE_CHECK_SECONDS = 30.0


class PostgresDatabase:
    """At most `DB_POOL_SIZE` asyncpg connections, opened on demand, handed to one request
    at a time.

    - Autocommit on a direct connection: each request is one statement (plus an idempotent
      upsert the first time a user is seen), so BEGIN/COMMIT would only add round trips.
      Behind PgBouncer in transaction mode each request runs in a transaction instead.
    - Requests wait for a connection in arrival order (`_slots`, as many as the pool's
      size) for at most `DB_POOL_TIMEOUT_SECONDS`.
    - A connection idle longer than `DB_IDLE_PING_SECONDS` is pinged (with the connect
      timeout) before use, so a restarted server costs no failed request.
    - A connection that failed mid-exchange (or whose request was cancelled) is closed,
      never reused; and as the server is then likely gone or restarted, every other
      connection is replaced on its next use (`_generation`), so the service recovers by
      itself.

    Not asyncpg's `Pool`: its acquire and release (a task per release, timeouts, a reset
    query) cost more CPU than the rest of a GET request, and its wait is not first-come
    first-served, which stretches the tail (docs/design.md, "Database connections").
    Checking a connection out and in here is a counter (or, when it must wait, one future
    and one timer) and a deque operation.
    """

    def __init__(self, settings: Settings, resolved: ResolvedURL, engine: AsyncEngine) -> None:
        self.engine = engine
        self._settings = settings
        self._transactional = resolved.behind_transaction_pooler
        self.retry_after = settings.retry_after_seconds
        url = resolved.url
        self._connect_args: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "user": url.username,
            "password": url.password,
            "database": url.database,
            **resolved.connect_args,
        }
        self._slots = Slots(settings.db_pool_size, settings.db_pool_timeout_seconds)
        self._idle: deque[tuple[Any, float]] = deque()  # (connection, idle since); newest last
        self._generations: dict[Any, int] = {}  # every open connection, and its generation
        self._generation = 0
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Ready to serve; connections are opened on demand."""
        self._reaper = asyncio.create_task(self._close_idle_connections())

    async def close(self) -> None:
        """Close idle connections (those in use are closed when their request ends)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        idle = [self._forget(connection) for connection, _ in self._idle]
        self._idle.clear()
        await asyncio.gather(*(self._close(connection) for connection in idle))
        await self.engine.dispose()

    def session(self) -> _PooledSession:
        return _PooledSession(self)

    async def _checkout(self) -> Any:
        """A connection for this request, once it is its turn."""
        await self._slots.acquire()
        try:
            return await self._take()
        except BaseException:
            self._slots.release()
            raise

    async def _take(self) -> Any:
        """The most recently used idle connection (pinged if idle long), or a new one."""
        settings = self._settings
        while self._idle:
            connection, since = self._idle.pop()
            if connection.is_closed() or self._generations[connection] != self._generation:
                self._discard(connection)
                continue
            ping = settings.db_idle_ping_seconds
            if not ping or time.monotonic() - since < ping:
                return connection
            try:
                await connection.execute("SELECT 1", timeout=settings.db_connect_timeout_seconds)
            except Exception as error:
                self._discard(connection)
                if not is_unavailable(error):
                    raise
                self._generation += 1  # the server restarted: replace the others too
                continue
            return connection
        connection = await asyncpg.connect(**self._connect_args)
        self._generations[connection] = self._generation
        return connection

    def _checkin(self, connection: Any, error: BaseException | None) -> None:
        """Return a request's connection: kept if healthy, else closed."""
        try:
            if error is not None and (not isinstance(error, Exception) or broke_connection(error)):
                # Cancelled or failed mid-exchange: its state is unknown, never reuse it.
                self._discard(connection)
                if isinstance(error, Exception):
                    self._generation += 1  # the server is likely gone: replace the others
            elif (
                self._closed
                or connection.is_closed()
                or connection.is_in_transaction()
                or self._generations.get(connection) != self._generation
            ):
                self._discard(connection)
            else:
                self._idle.append((connection, time.monotonic()))
        finally:
            self._slots.release()

    def _forget(self, connection: Any) -> Any:
        self._generations.pop(connection, None)
        return connection

    def _discard(self, connection: Any) -> None:
        """Drop a connection at once (no goodbye to a server that may be gone)."""
        self._forget(connection).terminate()

    async def _close(self, connection: Any) -> None:
        try:
            await connection.close(timeout=self._settings.db_connect_timeout_seconds)
        except Exception:
            connection.terminate()

    async def _close_idle_connections(self) -> None:
        while True:
            await asyncio.sleep(IDLE_CHECK_SECONDS)
            cutoff = time.monotonic() - IDLE_LIFETIME_SECONDS
            while self._idle and self._idle[0][1] < cutoff:  # the oldest are on the left
                connection, _ = self._idle.popleft()
                await self._close(self._forget(connection))

    async def ping(self) -> None:
        async with self.session() as session:
            timeout = self._settings.db_connect_timeout_seconds
            await session.connection.execute("SELECT 1", timeout=timeout)

    def pool_stats(self) -> dict[str, int]:
        """Open and idle connections (diagnostics; the pool tests read them)."""
        return {"size": len(self._generations), "idle": len(self._idle)}

    def pool_usage(self) -> PoolUsage:
        slots = self._slots
        return PoolUsage(
            slots.held(), slots.waiting(), len(self._generations), self._settings.db_pool_size
        )

    def replace_connections_for_tests(self) -> None:
        """Replace every connection on its next use, as after a server restart."""
        self._generation += 1
