"""The request's unit of work: the one place a request's transaction commits or rolls back."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import NoReturn, TypeVar

from taskapi.db.backend import Connection, Database
from taskapi.db.failures import (
    ListRowMissingError,
    UserRowMissingError,
    as_unavailable,
    missing_row,
)
from taskapi.db.query import Params, Query

R = TypeVar("R")


class UnitOfWork:
    """`async with UnitOfWork(database) as work:` runs the request's queries in one
    transaction, committed when the block ends normally, rolled back when it raises;
    after a commit, the `after_commit` callbacks run.

    No connection is taken until the first query, so a request refused before it (a bad
    token, a rate limit) never waits for the pool. A driver failure meaning "down or
    overloaded" leaves as `UnavailableError` (503), whichever backend raised it.
    """

    __slots__ = ("_callbacks", "_connection", "_context", "_database")

    def __init__(self, database: Database) -> None:
        self._database = database
        self._context: AbstractAsyncContextManager[Connection] | None = None
        self._connection: Connection | None = None
        self._callbacks: list[Callable[[], None]] = []

    async def __aenter__(self) -> UnitOfWork:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        context, self._context, self._connection = self._context, None, None
        if context is not None:
            try:
                await context.__aexit__(exc_type, exc, tb)
            except Exception as error:
                self._raise(error)
        if exc is None:
            for callback in self._callbacks:
                callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the work has committed (e.g. to fill a cache)."""
        self._callbacks.append(callback)

    async def fetch_one(self, query: Query[R], params: Params) -> R | None:
        try:
            return await (self._connection or await self._open()).fetch_one(query, params)
        except Exception as error:
            self._raise(error, params)

    async def fetch_all(self, query: Query[R], params: Params) -> list[R]:
        try:
            return await (self._connection or await self._open()).fetch_all(query, params)
        except Exception as error:
            self._raise(error, params)

    async def begin(self) -> None:
        """Run the rest of the work in one transaction: for an operation of several
        statements (on a direct PostgreSQL connection each statement commits by itself)."""
        try:
            await (self._connection or await self._open()).begin()
        except Exception as error:
            self._raise(error)

    async def try_lock(self, key: int) -> bool:
        """Take the lock named `key` until the work ends, unless another request holds it
        (then False, at once)."""
        try:
            return await (self._connection or await self._open()).try_lock(key)
        except Exception as error:
            self._raise(error)

    async def _open(self) -> Connection:
        context = self._database.session()
        self._connection = await context.__aenter__()
        self._context = context
        return self._connection

    def _raise(self, error: Exception, params: Params | None = None) -> NoReturn:
        missing = missing_row(error)
        if missing == "user":
            owner_id = (params or {}).get("owner_id")
            raise UserRowMissingError(owner_id, self._database.retry_after) from error
        if missing == "list":
            raise ListRowMissingError() from error
        failure = as_unavailable(error, self._database.retry_after)
        if failure is error:
            raise error
        raise failure from error
