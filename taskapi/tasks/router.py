"""HTTP endpoints of `/api/v1/tasks`: FastAPI parses and declares (OpenAPI, `/docs`); the
operations in `taskapi.tasks.operations` answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator

from taskapi.auth.dependencies import CurrentUser
from taskapi.db import Session, UnitOfWorkRoute
from taskapi.errors import ErrorBody, UnsupportedMediaTypeError
from taskapi.tasks import operations
from taskapi.tasks.contract import (
    DEFAULT_PAGE_SIZE,
    MAX_CURSOR_LENGTH,
    MAX_PAGE_SIZE,
    MAX_TASK_ID,
    PREFIX,
    Cursor,
    TaskFilter,
    is_json_content_type,
    plain_digits,
)
from taskapi.tasks.operations import ReplyResponse
from taskapi.tasks.schemas import Priority, TaskCreate, TaskRead, TaskUpdate


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("Missing, malformed, invalid or expired token"),
    422: _error("Invalid input; `detail` names the offending field"),
    429: _error("Rate limit exceeded; see `Retry-After`"),
    503: _error("Database or key set unavailable; see `Retry-After`"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: _error("Task not found, or owned by someone else"),
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Request body is not parseable JSON (e.g. not UTF-8, or nested too deeply)"),
    413: _error("Request body larger than the configured limit"),
    415: _error("Request body is not JSON"),
}

TaskId = Annotated[
    int, Path(ge=1, le=MAX_TASK_ID, description="The task's id"), BeforeValidator(plain_digits)
]


async def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (see `is_json_content_type`)."""
    if not is_json_content_type(request.headers.get("content-type")):
        raise UnsupportedMediaTypeError()


# Each request runs in one unit of work (see UnitOfWorkRoute), opened on its first query.
router = APIRouter(
    prefix=PREFIX,
    tags=["tasks"],
    responses=COMMON_ERRORS,
    route_class=UnitOfWorkRoute,
)


@router.get(
    "",
    response_model=list[TaskRead],
    summary="List the user's tasks",
    description=(
        "A page of the authenticated user's tasks, oldest first. When more follow, the "
        '`Link: <...>; rel="next"` header holds the URL of the next page.'
    ),
)
async def list_tasks(
    request: Request,
    work: Session,
    user: CurrentUser,
    completed: Annotated[bool | None, Query(description="Only (un)completed tasks")] = None,
    priority: Annotated[Priority | None, Query(description="Only this priority")] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_PAGE_SIZE, description="Page size"),
        BeforeValidator(plain_digits),
    ] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="Opaque; from the previous page's Link"),
    ] = None,
) -> Response:
    after_id = Cursor.decode(cursor) if cursor is not None else None
    page = TaskFilter(completed, priority, after_id, limit)
    query = request.query_params.multi_items()
    return ReplyResponse(await operations.list_tasks(work, user.sub, page, query))


@router.post(
    "",
    response_model=TaskRead,
    status_code=201,
    summary="Create a task",
    responses=BODY_ERRORS,
    dependencies=[Depends(require_json)],
)
async def create_task(body: TaskCreate, work: Session, user: CurrentUser) -> Response:
    return ReplyResponse(await operations.create_task(work, user.sub, body))


@router.get("/{task_id}", response_model=TaskRead, summary="Get a task", responses=NOT_FOUND)
async def get_task(task_id: TaskId, work: Session, user: CurrentUser) -> Response:
    return ReplyResponse(await operations.get_task(work, user.sub, task_id))


@router.put(
    "/{task_id}",
    response_model=TaskRead,
    summary="Update a task (partial)",
    description=(
        "Only the fields sent change; `null` clears `description`, `priority` or `due_date`. "
        "Read-only fields (`id`, `user_id`, `created_at`, `updated_at`) are ignored, so a task "
        "read with GET can be sent back as it is."
    ),
    responses={**NOT_FOUND, **BODY_ERRORS},
    dependencies=[Depends(require_json)],
)
async def update_task(
    task_id: TaskId, body: TaskUpdate, work: Session, user: CurrentUser
) -> Response:
    return ReplyResponse(await operations.update_task(work, user.sub, task_id, body))


@router.delete(
    "/{task_id}",
    status_code=204,
    summary="Delete a task",
    responses=NOT_FOUND,
    response_class=Response,
)
async def delete_task(task_id: TaskId, work: Session, user: CurrentUser) -> Response:
    return ReplyResponse(await operations.delete_task(work, user.sub, task_id))
