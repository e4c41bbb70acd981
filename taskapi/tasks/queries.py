"""Task statements. Every one is built once, from one owner-filtered base.

The owner filter is a bind parameter of the base statements below, so no query on tasks
can be written without it, and each statement's SQL is compiled once per process. Every
query returning tasks returns them rendered (`RenderedTask`): as PostgreSQL builds them in
its SQL, or as orjson builds them from SQLite's columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, delete, insert, select, update
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ColumnElement

from taskapi.db import Query, Row
from taskapi.models import tasks
from taskapi.tasks.render import (
    RenderedTask,
    rendered_from_columns,
    rendered_from_record,
    task_json_sql,
)

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

# What PostgreSQL returns for a task: its id and its JSON document (taskapi.tasks.render).
RENDERED = (tasks.c.id, task_json_sql(COLUMNS))


def _task_query(build: Callable[[Sequence[ColumnElement[Any]]], Executable]) -> Query[RenderedTask]:
    """A query returning rendered tasks; `build` makes its statement for given columns."""
    return Query.shaped(
        build(COLUMNS), rendered_from_columns, build(RENDERED), rendered_from_record
    )


# The one owner filter every statement below is built from.
OWNED = tasks.c.user_id == bindparam("owner_id")
THIS_TASK = tasks.c.id == bindparam("task_id")


def _owned_tasks(columns: Sequence[ColumnElement[Any]]) -> Select[Any]:
    return select(*columns).where(OWNED)


GET_TASK = _task_query(lambda columns: _owned_tasks(columns).where(THIS_TASK))
DELETE_TASK: Query[Row] = Query.of(delete(tasks).where(OWNED, THIS_TASK).returning(tasks.c.id))
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
def list_statement(completed: bool, priority: bool, after: bool) -> Query[RenderedTask]:
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
def update_statement(fields: frozenset[str]) -> Query[RenderedTask]:
    """UPDATE .. RETURNING of the owner's task, setting exactly `fields`."""
    values: dict[str, Any] = {n: bindparam(f"new_{n}") for n in UPDATABLE if n in fields}
    return _task_query(
        lambda columns: update(tasks).where(OWNED, THIS_TASK).values(**values).returning(*columns)
    )
