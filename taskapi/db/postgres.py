"""PostgreSQL through an asyncpg pool: the hot path.

Statements are SQLAlchemy Core, compiled once (`Query`); executing them on asyncpg directly
costs about a fifth of the CPU of executing them through SQLAlchemy (measured: 31 against
152 microseconds a query), which is most of a request's budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from taskapi.config import Settings
from taskapi.db.session import Params, Query, Row, _Callbacks
from taskapi.db.url import ResolvedURL
from taskapi.errors import is_unavailable

logger = logging.getLogger("taskapi.db")


class PostgresSession(_Callbacks):
    """A session on one pooled asyncpg connection."""

    __slots__ = ("connection",)

    def __init__(self, connection: Any) -> None:
        super().__init__()
        self.connection = connection

    async def fetch_one(self, query: Query, params: Params) -> Row | None:
        row = await self.connection.fetchrow(query.sql, *[params[n] for n in query.names])
        return None if row is None else dict(row)

    async def fetch_all(self, query: Query, params: Params) -> list[Row]:
        rows = await self.connection.fetch(query.sql, *[params[n] for n in query.names])
        return [dict(row) for row in rows]


async def _keep_session(connection: Any) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does first (roll
    back an open transaction, drop listeners). Requests change no session state (no SET,
    LISTEN, cursors or advisory locks), so the default reset, `RESET ALL` and friends,
    would only add a round trip to every request (measured: ~15% of throughput)."""


class _PooledSession:
    """One request's connection: a transaction around it behind PgBouncer, none (autocommit)
    on a direct connection. A class rather than a generator-based context manager: this
    runs on every request."""

    __slots__ = ("_connection", "_database", "_raw", "_transaction")

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._transaction: Any = None

    async def __aenter__(self) -> PostgresSession:
        database = self._database
        connection = self._connection = await database._acquire()
        self._raw = connection._con  # the pooled connection behind the proxy (None once lost)
        if database._transactional:
            try:
                self._transaction = connection.transaction()
                await self._transaction.start()
            except BaseException as error:
                await database._done(connection, self._raw, error)
                raise
        return PostgresSession(connection)

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
            await self._database._done(self._connection, self._raw, error)


class PostgresDatabase:
    """An asyncpg pool sized and timed from settings.

    - Autocommit on a direct connection: each request is one statement (plus an idempotent
      upsert the first time a user is seen), so BEGIN/COMMIT would only add round trips.
      Behind PgBouncer in transaction mode each request runs in a transaction instead.
    - A connection idle longer than `DB_IDLE_PING_SECONDS` is pinged (with the connect
      timeout) before use, so a restarted server costs no failed request.
    - After a lost connection every pooled connection is replaced, as the server is likely
      gone or restarted, so the service recovers by itself.
    - Requests wait for a connection in arrival order (`_slots`, a FIFO semaphore of the
      pool's size). asyncpg's own wait lets a newly arrived request take a connection
      released for an earlier waiter, which sends that one to the back of the line:
      measured, a p99 of 160 ms against a median of 5 ms.
    """

    def __init__(self, settings: Settings, resolved: ResolvedURL, engine: AsyncEngine) -> None:
        self.engine = engine
        self._settings = settings
        self._resolved = resolved
        self._transactional = not resolved.prepared_statements
        self._pool: Any = None
        self._slots = asyncio.Semaphore(settings.db_pool_size)
        self._idle_since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    async def open(self) -> None:
        """Create the pool; connections are opened on demand."""
        url = self._resolved.url
        args = dict(self._resolved.connect_args)
        self._pool = await asyncpg.create_pool(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database,
            min_size=0,
            max_size=self._settings.db_pool_size,
            max_inactive_connection_lifetime=300,
            reset=_keep_session,
            **args,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        await self.engine.dispose()

    def session(self) -> _PooledSession:
        return _PooledSession(self)

    async def _done(self, connection: Any, raw: Any, error: BaseException | None) -> None:
        """Return a session's connection; after an 'unavailable' error, never reuse it."""
        try:
            if isinstance(error, Exception) and is_unavailable(error):
                # It may be mid-way through a failed exchange, and the server is likely
                # gone or restarted: drop it, and replace the others on next use.
                connection.terminate()
                await self._pool.expire_connections()
        finally:
            if raw is not None and not raw.is_closed():
                self._idle_since[raw] = time.monotonic()
            await self._checkin(connection)

    async def _checkout(self) -> Any:
        """A pooled connection, once one is free for this request (in arrival order)."""
        if self._slots.locked():
            async with asyncio.timeout(self._settings.db_pool_timeout_seconds):
                await self._slots.acquire()
        else:
            await self._slots.acquire()  # returns at once
        try:
            # Never waits: the slots admit no more requests than the pool has connections.
            return await self._pool.acquire()
        except BaseException:
            self._slots.release()
            raise

    async def _checkin(self, connection: Any) -> None:
        try:
            await self._pool.release(connection)
        finally:
            self._slots.release()

    async def _acquire(self) -> Any:
        """A pooled connection, pinged first if it sat idle (a stale one is replaced)."""
        settings = self._settings
        connection = await self._checkout()
        idle = settings.db_idle_ping_seconds
        raw = connection._con
        since = self._idle_since.get(raw) if raw is not None else None
        if not idle or since is None or time.monotonic() - since < idle:
            return connection
        try:
            await connection.execute("SELECT 1", timeout=settings.db_connect_timeout_seconds)
        except Exception as error:
            connection.terminate()
            await self._checkin(connection)
            if not is_unavailable(error):
                raise
            await self._pool.expire_connections()
            return await self._checkout()
        return connection

    async def ping(self) -> None:
        limit = self._settings.db_connect_timeout_seconds
        connection = await self._checkout()
        try:
            await connection.execute("SELECT 1", timeout=limit)
        finally:
            await self._checkin(connection)

    def pool_stats(self) -> dict[str, int]:
        """Open and idle connections (for tests and diagnostics)."""
        return {"size": self._pool.get_size(), "idle": self._pool.get_idle_size()}

    async def reset(self) -> None:
        """Replace every pooled connection on next use."""
        await self._pool.expire_connections()
