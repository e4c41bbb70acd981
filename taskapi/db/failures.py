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


class UserRowMissingError(UnavailableError):
    """A write needed the caller's `users` row and it is gone: `DELETE /api/v1/me` ran in
    another worker, whose provisioner forgot the user while this one's still remembers it.
    The request is run again once with the user provisioned afresh (`rerun_for_user`); only
    if that fails too does it leave as this 503."""

    def __init__(self, owner_id: str | None, retry_after: int) -> None:
        super().__init__(retry_after=retry_after)
        self.owner_id = owner_id


class ListRowMissingError(Exception):
    """A write named a list that is not (or no longer) the owner's: the foreign key
    `fk_tasks_list_id_lists` on PostgreSQL, a trigger of the same name on SQLite. Raised
    when the list was deleted between the operation's check and its write."""


LIST_KEY = "fk_tasks_list_id_lists"
_USER_KEY_SUFFIX = "_user_id_users"  # fk_tasks_user_id_users, fk_lists_user_id_users, ...


def missing_row(error: BaseException) -> str | None:
    """Which row a failed write needed and did not find: "user" (the owner's row: a foreign
    key to `users`, or the owner's change number that its row gives), "list", or None."""
    if isinstance(error, asyncpg.ForeignKeyViolationError):
        name = error.constraint_name or ""
        if name == LIST_KEY:
            return "list"
        return "user" if name.endswith(_USER_KEY_SUFFIX) else None
    if isinstance(error, asyncpg.NotNullViolationError):
        return "user" if error.column_name == "change_seq" else None
    if isinstance(error, sa_exc.IntegrityError):
        message = str(error.orig)
        if LIST_KEY in message:
            return "list"
        if "FOREIGN KEY constraint failed" in message or ".change_seq" in message:
            return "user"  # SQLite names neither key: only `users` can be missing there
    return None


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
