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
from collections.abc import Sequence
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


class _PooledSession:
    """One request's connection, in autocommit (each statement commits by itself, before
    its reply) unless an operation of several statements asks for a transaction (`begin`);
    directly or behind a transaction pooler alike. Each record becomes the query's type. A
    class rather than a generator-based context manager: this runs on every request."""

    __slots__ = ("_connection", "_database", "_transaction")

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._transaction: Any = None

    async def __aenter__(self) -> _PooledSession:
        self._connection = await self._database._checkout()
        return self

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

    async def fetch_one(self, query: Query[R], params: Params) -> R | None:
        records = await self._run(query.sql, query.arguments(params), 1)
        return query.from_record(records[0]) if records else None

    async def fetch_all(self, query: Query[R], params: Params) -> list[R]:
        records = await self._run(query.sql, query.arguments(params), 0)
        decode = query.from_record
        return [decode(record) for record in records]

    async def _run(self, sql: str, args: Sequence[Any], limit: int) -> list[Any]:
        """The statement's records (at most `limit`, 0: all), in one round trip."""
        database = self._database
        connection = self._connection
        if database._pooled:
            return await run_unnamed(database._unnamed[connection], connection, sql, args, limit)
        try:
            if limit == 1:
                record = await connection.fetchrow(sql, *args)
                return [] if record is None else [record]
            records: list[Any] = await connection.fetch(sql, *args)
            return records
        except _PREPARED_STATEMENT_ERRORS as error:
            # Named prepared statements went missing or collided: a transaction pooler the
            # probe did not see. Nothing ran (the error is at parse or bind); from now on
            # every connection sends its statements unnamed.
            database._found_pooler(f"{type(error).__name__} on a prepared statement")
            if self._transaction is not None:
                raise
            statements = database._unnamed.setdefault(connection, {})
            return await run_unnamed(statements, connection, sql, args, limit)

    async def begin(self) -> None:
        if self._transaction is None:
            transaction = self._connection.transaction()
            await transaction.start()
            self._transaction = transaction

    async def try_lock(self, key: int) -> bool:
        await self.begin()
        (record,) = await self._run("SELECT pg_try_advisory_xact_lock($1)", (key,), 1)
        locked: bool = record[0]
        return locked

    async def execute(self, sql: str) -> None:
        """Run a statement of the database's own (a health check)."""
        await self._connection.execute(
            sql, timeout=self._database._settings.db_connect_timeout_seconds
        )


async def run_unnamed(
    statements: dict[str, Any], connection: Any, sql: str, args: Sequence[Any], limit: int
) -> list[Any]:
    """Run `sql` as the unnamed statement: parse, bind, execute and sync sent together, one
    round trip, which a transaction pooler keeps on one server connection.

    asyncpg (with its statement cache off) would prepare the unnamed statement in one round
    trip (parse, describe, sync) to learn its parameter and result types, then parse it
    again with the bind in a second (`mark_unprepared`). The first answer is kept per
    connection and statement here, so from the second use on only the second round trip is
    left. (The server parses and plans the statement each time, as for any unnamed
    statement.) asyncpg's own internals, pinned in requirements.txt; tests/db check it."""
    state = statements.get(sql)
    if state is None:
        state = await connection._get_statement(sql, None, use_cache=False)
        state.mark_unprepared()  # parse it again with every bind: no named statement is kept
        statements[sql] = state
    records: list[Any] = await connection._protocol.bind_execute(
        state, args, "", limit, False, None
    )
    return records


_PREPARED_STATEMENT_ERRORS = (
    asyncpg.exceptions.InvalidSQLStatementNameError,  # 26000: not on this server connection
    asyncpg.exceptions.DuplicatePreparedStatementError,  # 42P05: another client's is there
)


async def _probe(connection: Any) -> str | None:
    """Why `connection` goes through a pooler, or None if it reaches PostgreSQL itself.

    A pooler answers the client's start-up itself, with a cancellation key of its own: the
    process id in it is not the id of the server process that runs the statements."""
    if await connection.fetchval("SELECT pg_backend_pid()") == connection.get_server_pid():
        return None
    return "the server's process id is not the connection's"


POOL_BASE = 10
POOL_PER_MS = 4
POOL_MAX = 64


def pool_size_for(round_trip: float) -> int:
    """The pool's size when DB_POOL_SIZE is unset, for a database `round_trip` seconds away:
    10 connections, plus 4 per millisecond of round trip, at most 64.

    A connection serves at most one statement per round trip, and one worker answers at
    most ~4,000 requests a second (of one statement each) on this machine's cores: with the
    database 1 ms away each way the pool grows to ~18, 5 ms away to ~52 (measured in
    bench/README.md). Next to the database it stays at 10: more connections there only
    make PostgreSQL's processes compete for the cores (20 measured 12% slower on the mix)."""
    return min(POOL_MAX, POOL_BASE + int(POOL_PER_MS * 1000 * round_trip))


# Connections idle longer than this are closed (checked every IDLE_CHECK_SECONDS), so an
# idle service holds no connections, as with asyncpg's `max_inactive_connection_lifetime`.
IDLE_LIFETIME_SECONDS = 300.0
IDLE_CHECK_SECONDS = 30.0


class PostgresDatabase:
    """At most `DB_POOL_SIZE` asyncpg connections, opened on demand, handed to one request
    at a time.

    - Autocommit: each request is one statement (plus an idempotent upsert the first time
      a user is seen), and one statement is atomic, so BEGIN/COMMIT would only add round
      trips; an operation of several statements asks for a transaction (`begin`).
    - One round trip per statement, directly (named prepared statements, asyncpg's cache)
      and behind a transaction pooler (the unnamed statement, parsed with each bind:
      `run_unnamed`). Whether a pooler is in between is the setting's
      (`DB_PREPARED_STATEMENTS`), the host's (Neon's `-pooler`), or else found out on the
      first connection (`_probe`) or at the first prepared statement a pooler lost.
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
        self._pooled = resolved.behind_transaction_pooler  # None: not known yet
        self._unnamed: dict[Any, dict[str, Any]] = {}  # per connection: sql -> its statement
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
        # DB_POOL_SIZE unset: the pool follows the database's round trip (pool_size_for)
        self._adaptive = "db_pool_size" not in settings.model_fields_set
        self._fastest: float | None = None  # the smallest round trip seen, in seconds
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
        connection = await self._connect()
        self._generations[connection] = self._generation
        if self._pooled:
            self._unnamed[connection] = {}
        if self._adaptive:
            try:
                await self._measure(connection)
            except BaseException:
                self._discard(connection)
                raise
        return connection

    async def _measure(self, connection: Any) -> None:
        """Time one round trip on a new connection; size the pool by the smallest seen."""
        start = time.perf_counter()
        await connection.execute("SELECT 1", timeout=self._settings.db_connect_timeout_seconds)
        seconds = time.perf_counter() - start
        if self._fastest is None or seconds < self._fastest:
            self._fastest = seconds
            size = pool_size_for(seconds)
            if size != self._slots.size:
                logger.info("database round trip %.2f ms: pool of %d", 1000 * seconds, size)
                self._slots.resize(size)

    async def _connect(self) -> Any:
        """A new connection; the first one, unless the setting or the host said, finds out
        whether a pooler is in between (`_probe`)."""
        if self._pooled is not None:
            return await asyncpg.connect(**self._connect_args)
        # No named statement until it is known that they survive: a cache-less connection.
        connection = await asyncpg.connect(**{**self._connect_args, "statement_cache_size": 0})
        try:
            pooler = await _probe(connection)
        except BaseException:
            connection.terminate()
            raise
        if self._pooled is None:  # another request's probe may have answered meanwhile
            if pooler:
                self._found_pooler(pooler)
            else:
                self._pooled = False
        if self._pooled:
            return connection
        connection.terminate()
        return await asyncpg.connect(**self._connect_args)

    def _found_pooler(self, why: str) -> None:
        """From now on every connection sends its statements unnamed (`run_unnamed`)."""
        if self._pooled:
            return
        logger.warning(
            "PostgreSQL is reached through a connection pooler (%s): statements are sent "
            "unnamed, parsed with each bind, so that they survive it "
            "(DB_PREPARED_STATEMENTS=true/false overrides this)",
            why,
        )
        self._pooled = True
        self._connect_args["statement_cache_size"] = 0
        self._generation += 1  # replace the connections opened with a statement cache
        for connection in self._generations:
            self._unnamed.setdefault(connection, {})

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
        self._unnamed.pop(connection, None)
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
            await session.execute("SELECT 1")

    def pool_stats(self) -> dict[str, int]:
        """Open and idle connections (diagnostics; the pool tests read them)."""
        return {"size": len(self._generations), "idle": len(self._idle)}

    def pool_usage(self) -> PoolUsage:
        slots = self._slots
        return PoolUsage(slots.held(), slots.waiting(), len(self._generations), slots.size)

    def replace_connections_for_tests(self) -> None:
        """Replace every connection on its next use, as after a server restart."""
        self._generation += 1
