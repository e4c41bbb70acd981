"""Every label operation, once: the caller's labels with counts, renaming and removing one
on all the caller's tasks (each task touched is a change of the feed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from taskapi.db import UnitOfWork
from taskapi.errors import APIError
from taskapi.tasks import queries
from taskapi.tasks.operations import Reply


class LabelNotFoundError(APIError):
    status_code = 404
    code = "LABEL_NOT_FOUND"
    detail = "No task of yours carries this label"


async def list_labels(work: UnitOfWork, owner_id: str) -> Reply:
    """The owner's labels (one spelling each), by name, with how many tasks carry each."""
    rows = await work.fetch_all(queries.LABEL_COUNTS, {"owner_id": owner_id})
    return Reply(200, orjson.dumps([{"name": row["name"], "tasks": row["tasks"]} for row in rows]))


async def _touch(work: UnitOfWork, owner_id: str, name: str) -> dict[str, Any]:
    """In one transaction: give every task carrying the label a new version and change
    number (the feed shows them changed); LABEL_NOT_FOUND if none does."""
    await work.begin()
    params: dict[str, Any] = {"owner_id": owner_id, "name_key": name.lower()}
    touched = await work.fetch_all(queries.TOUCH_LABELLED, {**params, "now": datetime.now(UTC)})
    if not touched:
        raise LabelNotFoundError()
    params["count"] = len(touched)
    return params


async def rename_label(work: UnitOfWork, owner_id: str, name: str, new_name: str) -> Reply:
    """Rename the label on all the owner's tasks; a task that already carries the new name
    keeps it once."""
    params = await _touch(work, owner_id, name)
    count = params.pop("count")
    params.update(new_name=new_name, new_key=new_name.lower())
    if params["new_key"] != params["name_key"]:
        await work.fetch_all(queries.DROP_MERGED, params)
    await work.fetch_all(queries.RENAME_LABEL, params)
    return Reply(200, orjson.dumps({"name": new_name, "tasks": count}))


async def delete_label(work: UnitOfWork, owner_id: str, name: str) -> Reply:
    """Remove the label from all the owner's tasks."""
    params = await _touch(work, owner_id, name)
    params.pop("count")
    await work.fetch_all(queries.REMOVE_LABEL, params)
    return Reply(204)
