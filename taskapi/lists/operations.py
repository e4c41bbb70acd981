"""Every list operation, once: parsed inputs and the caller's id in, the reply out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from taskapi.db import UnitOfWork
from taskapi.lists import queries
from taskapi.lists.errors import ListNotFoundError, UnknownListError
from taskapi.lists.schemas import ListWrite, list_document
from taskapi.tasks import queries as task_queries
from taskapi.tasks.contract import Cursor, QueryItems
from taskapi.tasks.operations import Reply

PREFIX = "/api/v1/lists"
INBOX = "inbox"


def _location(list_id: int) -> tuple[bytes, bytes]:
    return (b"location", f"{PREFIX}/{list_id}".encode())


async def list_lists(
    work: UnitOfWork, owner_id: str, after_id: int | None, limit: int, query: QueryItems
) -> Reply:
    """A page of the owner's lists in id order; `Link` to the next one when more follow."""
    params = {"owner_id": owner_id, "after_id": after_id or 0, "page_size": limit + 1}
    rows = await work.fetch_all(queries.ALL_LISTS, params)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if len(rows) > limit:
        rows = rows[:limit]
        rest = [(k, v) for k, v in query if k != "cursor"]
        rest.append(("cursor", Cursor.encode(rows[-1]["id"])))

        headers = ((b"link", f'<{PREFIX}?{urlencode(rest)}>; rel="next"'.encode()),)
    return Reply(200, b"[" + b",".join(list_document(row) for row in rows) + b"]", headers)


async def get_list(work: UnitOfWork, owner_id: str, list_id: int) -> Reply:
    row = await work.fetch_one(queries.GET_LIST, {"owner_id": owner_id, "list_id": list_id})
    if row is None:
        raise ListNotFoundError()
    return Reply(200, list_document(row))


async def create_list(work: UnitOfWork, owner_id: str, data: ListWrite) -> Reply:
    params = {"owner_id": owner_id, "name": data.name, "now": datetime.now(UTC)}
    row = await work.fetch_one(queries.CREATE_LIST, params)
    assert row is not None
    return Reply(201, list_document(row), (_location(row["id"]),))


async def rename_list(work: UnitOfWork, owner_id: str, list_id: int, data: ListWrite) -> Reply:
    params = {"owner_id": owner_id, "list_id": list_id, "name": data.name}
    row = await work.fetch_one(queries.RENAME_LIST, {**params, "now": datetime.now(UTC)})
    if row is None:
        raise ListNotFoundError()
    return Reply(200, list_document(row))


async def delete_list(
    work: UnitOfWork, owner_id: str, list_id: int, move_tasks_to: int | str | None
) -> Reply:
    """Delete one of the owner's lists, in one transaction with its tasks: deleted (each
    leaving a tombstone for the change feed) or, with `move_tasks_to`, moved to another of
    the owner's lists or the inbox (each a change of the feed)."""
    await work.begin()
    params: dict[str, Any] = {"owner_id": owner_id, "list_id": list_id}
    target = None if move_tasks_to in (None, INBOX) else int(move_tasks_to)
    if target == list_id:
        raise UnknownListError("query.move_tasks_to (the list being deleted)")
    # Locked until the commit, in id order (two deletes moving into each other's list wait
    # rather than deadlock): this list against everything, the target against deletion.
    found: set[int] = set()
    for locked in sorted({list_id} if target is None else {list_id, target}):
        query = queries.LOCK_LIST if locked == list_id else queries.KEEP_LIST
        if await work.fetch_one(query, {"owner_id": owner_id, "list_id": locked}) is not None:
            found.add(locked)
    if list_id not in found:
        raise ListNotFoundError()
    if target is not None and target not in found:
        raise UnknownListError("query.move_tasks_to")
    if move_tasks_to is None:
        await work.fetch_all(task_queries.DELETE_LIST_TASKS, params)
    else:
        moved = {**params, "target_id": target, "now": datetime.now(UTC)}
        await work.fetch_all(task_queries.MOVE_LIST_TASKS, moved)
    await work.fetch_one(queries.DELETE_LIST, params)
    return Reply(204)
