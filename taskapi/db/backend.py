"""What the service asks of a database backend, whichever it is."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from taskapi.db.query import Params, Query

R = TypeVar("R")


class Connection(Protocol):
    """Runs queries inside a backend's transaction."""

    async def fetch_one(self, query: Query[R], params: Params) -> R | None: ...

    async def fetch_all(self, query: Query[R], params: Params) -> list[R]: ...

    async def begin(self) -> None:
        """Run the rest of the work in one transaction (a no-op where it already is)."""

    async def try_lock(self, key: int) -> bool:
        """Take the lock named `key` until the transaction ends, if no one holds it."""
        ...


class PoolUsage(NamedTuple):
    """A connection pool at one moment (for metrics)."""

    in_use: int
    """Connections handed to requests (or being opened for one)."""
    waiting: int
    """Requests waiting for a connection."""
    open: int
    """Connections open, in use or idle."""
    size: int
    """The most connections the pool opens now (`DB_POOL_SIZE`, or the adaptive size)."""


class Database(Protocol):
    """A backend: hands out connections whose work commits when their context exits
    normally and rolls back when it exits with an error.

    `retry_after` is the `Retry-After` of the 503 its driver failures become."""

    engine: AsyncEngine
    retry_after: int

    def session(self) -> AbstractAsyncContextManager[Connection]: ...

    async def ping(self) -> None: ...

    def pool_usage(self) -> PoolUsage | None:
        """The pool's state now, if the backend has a pool of its own."""

    async def close(self) -> None: ...
