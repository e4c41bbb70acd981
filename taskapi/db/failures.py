"""Driver failures that mean "down, restarting or overloaded", as the service's 503.

The only module that knows the drivers' exception types: everything above `taskapi.db`
sees such a failure as `UnavailableError` (503 with `Retry-After`), anything else as the
bug it is.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from sqlalchemy import exc as sa_exc

from taskapi.db.backend import Database
from taskapi.errors import UnavailableError

logger = logging.getLogger("taskapi.db")


# SQLSTATE classes meaning "down, restarting or overloaded": 08 connection exception,
# 53 insufficient resources, 57P0x shutdown/starting up, 57014 statement timeout or
# cancelled, 40001/40P01 serialisation failure or deadlock (safe to retry).
def _unavailable_sqlstate(sqlstate: object) -> bool:
    return isinstance(sqlstate, str) and (
        sqlstate.startswith(("08", "53", "57P")) or sqlstate in ("57014", "40001", "40P01")
    )


def is_unavailable(error: BaseException) -> bool:
    """Whether a failure means 'down or overloaded' rather than a bug."""
    if isinstance(error, (sa_exc.TimeoutError, TimeoutError, ConnectionError)):
        return True
    # "connection does not exist/closed", or a connection caught mid-way by a failure
    if isinstance(error, (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)):
        return True
    if isinstance(error, asyncpg.PostgresError):
        return _unavailable_sqlstate(error.sqlstate)
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(
            error, (sa_exc.OperationalError, sa_exc.InterfaceError)
        ):
            return True
        sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        if _unavailable_sqlstate(sqlstate):
            return True
    return isinstance(error, OSError)


def broke_connection(error: BaseException) -> bool:
    """Whether `error` (as a request ended with it) leaves its connection unusable: a driver
    failure meaning 'down', as it is or as the `UnavailableError` it became."""
    cause = error.__cause__ if isinstance(error, UnavailableError) else error
    return cause is not None and is_unavailable(cause)


def as_unavailable(error: Exception, retry_after: int) -> Exception:
    """`UnavailableError` for a 'down or overloaded' failure (logged once, by type); else
    the error itself."""
    if isinstance(error, UnavailableError) or not is_unavailable(error):
        return error
    logger.warning("database unavailable: %s", type(error).__name__)
    return UnavailableError(retry_after=retry_after)


async def ping(database: Database, seconds: float) -> None:
    """Check that the database answers within `seconds`; else `UnavailableError`."""
    try:
        async with asyncio.timeout(seconds):
            await database.ping()
    except Exception as error:
        if not is_unavailable(error):
            raise
        logger.warning("database unavailable: %s", type(error).__name__)
        raise UnavailableError("Database unavailable", retry_after=database.retry_after) from error
