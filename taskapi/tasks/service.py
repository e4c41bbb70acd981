"""Task queries. Every statement starts from `OwnedTasks`, already filtered to one owner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Delete, Select, Update, delete, insert, select, update

from taskapi.db import DBSession
from taskapi.errors import TaskNotFoundError
from taskapi.models import tasks
from taskapi.tasks.schemas import Priority, TaskCreate

Row = Mapping[str, Any]

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


class OwnedTasks:
    """The one place the owner filter is applied: select, update and delete start here."""

    __slots__ = ("_owned", "owner_id")

    def __init__(self, owner_id: str) -> None:
        self.owner_id = owner_id
        self._owned = tasks.c.user_id == owner_id

    def select(self) -> Select[Any]:
        return select(*COLUMNS).where(self._owned)

    def update(self) -> Update:
        return update(tasks).where(self._owned)

    def delete(self) -> Delete:
        return delete(tasks).where(self._owned)


async def get_task(session: DBSession, owned: OwnedTasks, task_id: int) -> Row:
    """One task of the owner, or TASK_NOT_FOUND."""
    result = await session.connection.execute(owned.select().where(tasks.c.id == task_id))
    row = result.mappings().first()
    if row is None:
        raise TaskNotFoundError()
    return row


async def list_tasks(
    session: DBSession,
    owned: OwnedTasks,
    *,
    completed: bool | None,
    priority: Priority | None,
    after_id: int | None,
    limit: int,
) -> Sequence[Row]:
    """A page of the owner's tasks in id order, one more than `limit` to tell if more follow."""
    statement = owned.select()
    if completed is not None:
        statement = statement.where(tasks.c.completed == completed)
    if priority is not None:
        statement = statement.where(tasks.c.priority == priority.value)
    if after_id is not None:
        statement = statement.where(tasks.c.id > after_id)
    statement = statement.order_by(tasks.c.id).limit(limit + 1)
    result = await session.connection.execute(statement)
    return result.mappings().all()


async def create_task(session: DBSession, owned: OwnedTasks, data: TaskCreate) -> Row:
    """Insert a task for the owner and return it, in one round trip."""
    now = datetime.now(UTC)
    statement = (
        insert(tasks)
        .values(
            title=data.title,
            description=data.description,
            completed=data.completed,
            priority=data.priority.value if data.priority else None,
            due_date=data.due_date,
            user_id=owned.owner_id,
            created_at=now,
            updated_at=now,
        )
        .returning(*COLUMNS)
    )
    result = await session.connection.execute(statement)
    return result.mappings().one()


async def update_task(
    session: DBSession, owned: OwnedTasks, task_id: int, changes: Mapping[str, Any]
) -> Row:
    """Apply the fields sent (and advance updated_at) in one round trip, or TASK_NOT_FOUND."""
    values = dict(changes)
    if isinstance(values.get("priority"), Priority):
        values["priority"] = values["priority"].value
    values["updated_at"] = datetime.now(UTC)
    statement = owned.update().where(tasks.c.id == task_id).values(**values).returning(*COLUMNS)
    result = await session.connection.execute(statement)
    row = result.mappings().first()
    if row is None:
        raise TaskNotFoundError()
    return row


async def delete_task(session: DBSession, owned: OwnedTasks, task_id: int) -> None:
    """Delete one of the owner's tasks, or TASK_NOT_FOUND."""
    statement = owned.delete().where(tasks.c.id == task_id).returning(tasks.c.id)
    result = await session.connection.execute(statement)
    if result.first() is None:
        raise TaskNotFoundError()
