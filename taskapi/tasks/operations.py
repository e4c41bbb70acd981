"""Every task operation, once: parsed inputs and the caller's id in, the reply out.

Both request paths call these (the FastAPI routes in `router`, the fast path in
`fastpath`); only their parsing differs. Each operation runs its statement in the
request's unit of work, which commits before the reply is sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from starlette.responses import Response

from taskapi.db import UnitOfWork
from taskapi.errors import TaskNotFoundError
from taskapi.tasks import queries
from taskapi.tasks.contract import QueryItems, TaskFilter, location, next_link
from taskapi.tasks.render import page_json
from taskapi.tasks.schemas import Priority, TaskCreate, TaskUpdate

Header = tuple[bytes, bytes]
_JSON = (b"content-type", b"application/json")


class Reply(NamedTuple):
    """An operation's answer: status, body (JSON, or empty for 204) and extra headers."""

    status: int
    body: bytes = b""
    headers: tuple[Header, ...] = ()

    def wire_headers(self) -> list[Header]:
        """Every header of the reply, as sent."""
        if self.status == 204:
            return list(self.headers)
        return [*self.headers, _JSON, (b"content-length", str(len(self.body)).encode())]


class ReplyResponse(Response):
    """A `Reply` as a Starlette response (for the FastAPI routes)."""

    def __init__(self, reply: Reply) -> None:
        self.status_code = reply.status
        self.body = reply.body
        self.background = None
        self.raw_headers = reply.wire_headers()


async def get_task(work: UnitOfWork, owner_id: str, task_id: int) -> Reply:
    """One of the owner's tasks, or TASK_NOT_FOUND."""
    task = await work.fetch_one(queries.GET_TASK, {"owner_id": owner_id, "task_id": task_id})
    if task is None:
        raise TaskNotFoundError()
    return Reply(200, task.json)


async def list_tasks(work: UnitOfWork, owner_id: str, page: TaskFilter, query: QueryItems) -> Reply:
    """A page of the owner's tasks in id order; `Link` to the next page when more follow
    (one more row than the page is read to tell)."""
    completed, priority, after_id, limit = page
    statement = queries.list_statement(
        completed is not None, priority is not None, after_id is not None
    )
    params: dict[str, Any] = {"owner_id": owner_id, "page_size": limit + 1}
    if completed is not None:
        params["completed"] = completed
    if priority is not None:
        params["priority"] = priority.value
    if after_id is not None:
        params["after_id"] = after_id
    rows = await work.fetch_all(statement, params)
    if len(rows) <= limit:
        return Reply(200, page_json(rows))
    rows = rows[:limit]
    return Reply(200, page_json(rows), ((b"link", next_link(query, rows[-1].id).encode()),))


async def create_task(work: UnitOfWork, owner_id: str, data: TaskCreate) -> Reply:
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
    task = await work.fetch_one(queries.CREATE_TASK, values)
    assert task is not None
    return Reply(201, task.json, ((b"location", location(task.id).encode()),))


async def update_task(work: UnitOfWork, owner_id: str, task_id: int, data: TaskUpdate) -> Reply:
    """Apply the fields sent (and advance updated_at) in one round trip, or TASK_NOT_FOUND."""
    values = data.model_dump(exclude_unset=True)
    if isinstance(values.get("priority"), Priority):
        values["priority"] = values["priority"].value
    values["updated_at"] = datetime.now(UTC)
    params = {f"new_{name}": value for name, value in values.items()}
    params.update(owner_id=owner_id, task_id=task_id)
    task = await work.fetch_one(queries.update_statement(frozenset(values)), params)
    if task is None:
        raise TaskNotFoundError()
    return Reply(200, task.json)


async def delete_task(work: UnitOfWork, owner_id: str, task_id: int) -> Reply:
    """Delete one of the owner's tasks, or TASK_NOT_FOUND."""
    deleted = await work.fetch_one(queries.DELETE_TASK, {"owner_id": owner_id, "task_id": task_id})
    if deleted is None:
        raise TaskNotFoundError()
    return Reply(204)
