"""Whether a list id is the caller's: for task bodies (`list_id`) and `move_tasks_to`."""

from __future__ import annotations

from taskapi.db import UnitOfWork
from taskapi.lists import queries
from taskapi.lists.errors import UnknownListError


async def require_list(work: UnitOfWork, owner_id: str, list_id: int | None, where: str) -> None:
    """422 LIST_NOT_FOUND unless `list_id` is None (the inbox) or one of the owner's lists
    (a missing list and another user's answer alike)."""
    if list_id is None:
        return
    found = await work.fetch_one(queries.LIST_EXISTS, {"owner_id": owner_id, "list_id": list_id})
    if found is None:
        raise UnknownListError(where)
