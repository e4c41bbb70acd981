"""Task queries. Every statement is built once, from one owner-filtered base.

The owner filter is a bind parameter of the base statements below, so no query on tasks
can be written without it, and each statement's SQL is compiled once per process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, delete, insert, select, update
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ColumnElement

from taskapi.db import DBSession, Query, Row
from taskapi.errors import TaskNotFoundError
from taskapi.models import tasks
from taskapi.tasks.render import rendered_row, task_json_sql
from taskapi.tasks.schemas import Priority, TaskCreate

COLUMNS = (
    tasks.c.id,
    tasks.c.title,
    tasks.c.description,
    tasks.c.completed,
    tasks.c.priority,
    tasks.c.due_date,
    tasks.c.user_id,
    tasks.c.created_at,
    tasks.c.updated_at,
)

# The rendered variant of a task query returns each row as its id and its JSON document
# (see taskapi.tasks.render): built by PostgreSQL, or in Python from the columns elsewhere.
RENDERED = (tasks.c.id, task_json_sql(COLUMNS))


def _task_query(build: Callable[[Sequence[ColumnElement[Any]]], Executable]) -> Query:
    """A query returning task rows, `build` given the columns to return; and its rendered
    variant."""
    generic = build(COLUMNS)
    rendered = Query.of(generic, build(RENDERED), shape=rendered_row)
    return Query.of(generic, rendered=rendered)


# The one owner filter every statement below is built from.
OWNED = tasks.c.user_id == bindparam("owner_id")
THIS_TASK = tasks.c.id == bindparam("task_id")


def _owned_tasks(columns: Sequence[ColumnElement[Any]]) -> Select[Any]:
    return select(*columns).where(OWNED)


GET_TASK = _task_query(lambda columns: _owned_tasks(columns).where(THIS_TASK))
DELETE_TASK = Query.of(delete(tasks).where(OWNED, THIS_TASK).returning(tasks.c.id))
INSERTED = (
    "title",
    "description",
    "completed",
    "priority",
    "due_date",
    "user_id",
    "created_at",
    "updated_at",
)
CREATE_TASK = _task_query(
    lambda columns: (
        insert(tasks).values({name: bindparam(name) for name in INSERTED}).returning(*columns)
    )
)
UPDATABLE = ("title", "description", "completed", "priority", "due_date", "updated_at")


@cache
def list_statement(completed: bool, priority: bool, after: bool) -> Query:
    """The page query for one combination of filters (8 at most, each compiled once)."""

    def build(columns: Sequence[ColumnElement[Any]]) -> Select[Any]:
        statement = _owned_tasks(columns)
        if completed:
            statement = statement.where(tasks.c.completed == bindparam("completed"))
        if priority:
            statement = statement.where(tasks.c.priority == bindparam("priority"))
        if after:
            statement = statement.where(tasks.c.id > bindparam("after_id"))
        return statement.order_by(tasks.c.id).limit(bindparam("page_size"))

    return _task_query(build)


@cache
def update_statement(fields: frozenset[str]) -> Query:
    """UPDATE .. RETURNING of the owner's task, setting exactly `fields`."""
    values: dict[str, Any] = {n: bindparam(f"new_{n}") for n in UPDATABLE if n in fields}
    return _task_query(
        lambda columns: update(tasks).where(OWNED, THIS_TASK).values(**values).returning(*columns)
    )


async def get_task(session: DBSession, owner_id: str, task_id: int) -> Row:
    """One task of the owner, or TASK_NOT_FOUND."""
    row = await session.fetch_one(GET_TASK, {"owner_id": owner_id, "task_id": task_id})
    if row is None:
        raise TaskNotFoundError()
    return row


async def list_tasks(
    session: DBSession,
    owner_id: str,
    *,
    completed: bool | None,
    priority: Priority | None,
    after_id: int | None,
    limit: int,
) -> Sequence[Row]:
    """A page of the owner's tasks in id order, one more than `limit` to tell if more follow."""
    statement = list_statement(completed is not None, priority is not None, after_id is not None)
    params: dict[str, Any] = {"owner_id": owner_id, "page_size": limit + 1}
    if completed is not None:
        params["completed"] = completed
    if priority is not None:
        params["priority"] = priority.value
    if after_id is not None:
        params["after_id"] = after_id
    return await session.fetch_all(statement, params)


async def create_task(session: DBSession, owner_id: str, data: TaskCreate) -> Row:
    """Insert a task for the owner and return it, in one round trip."""
    now = datetime.now(UTC)
    values = {
        "title": data.title,
        "description": data.description,
        "completed": data.completed,
        "priority": data.priority.value if data.priority else None,
        "due_date": data.due_date,
        "user_id": owner_id,
        "created_at": now,
        "updated_at": now,
    }
    row = await session.fetch_one(CREATE_TASK, values)
    assert row is not None
    return row


async def update_task(
    session: DBSession, owner_id: str, task_id: int, changes: Mapping[str, Any]
) -> Row:
    """Apply the fields sent (and advance updated_at) in one round trip, or TASK_NOT_FOUND."""
    values = {name: value for name, value in changes.items() if name in UPDATABLE}
    if isinstance(values.get("priority"), Priority):
        values["priority"] = values["priority"].value
    values["updated_at"] = datetime.now(UTC)
    params = {f"new_{name}": value for name, value in values.items()}
    params.update(owner_id=owner_id, task_id=task_id)
    row = await session.fetch_one(update_statement(frozenset(values)), params)
    if row is None:
        raise TaskNotFoundError()
    return row


async def delete_task(session: DBSession, owner_id: str, task_id: int) -> None:
    """Delete one of the owner's tasks, or TASK_NOT_FOUND."""
    row = await session.fetch_one(DELETE_TASK, {"owner_id": owner_id, "task_id": task_id})
    if row is None:
        raise TaskNotFoundError()
