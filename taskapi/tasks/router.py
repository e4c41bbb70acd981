"""HTTP endpoints of `/api/v1/tasks`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from taskapi.auth.dependencies import CurrentUser
from taskapi.db import Session, UnitOfWorkRoute
from taskapi.errors import APIError, ErrorBody, UnsupportedMediaTypeError
from taskapi.tasks import service
from taskapi.tasks.cursorpattern import CURSOR_PATTERN
from taskapi.tasks.schemas import Priority, TaskCreate, TaskRead, TaskUpdate

PREFIX = "/api/v1/tasks"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_TASK_ID = 2**63 - 1


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

TaskId = Annotated[int, Path(ge=1, le=MAX_TASK_ID, description="The task's id")]


def is_json_content_type(content_type: str | None) -> bool:
    """Bodies must be JSON; a missing (or empty) Content-Type is read as JSON.

    The media type is read as FastAPI reads it (`email.message`: one "/" or it is
    text/plain), so the fast path and FastAPI agree on every header.
    """
    if content_type is None or not content_type.strip():
        return True
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type.count("/") != 1:
        return False
    main, _, sub = media_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (see `is_json_content_type`)."""
    if not is_json_content_type(request.headers.get("content-type")):
        raise UnsupportedMediaTypeError()


def location(task_id: int) -> str:
    """The `Location` of a created task."""
    return f"{PREFIX}/{task_id}"


# Each request runs in one unit of work (see UnitOfWorkRoute), opened on its first query.
router = APIRouter(
    prefix=PREFIX,
    tags=["tasks"],
    responses=COMMON_ERRORS,
    route_class=UnitOfWorkRoute,
)


class InvalidCursorError(APIError):
    status_code = 422
    code = "VALIDATION_ERROR"
    detail = "query.cursor: invalid cursor; use the Link header of the previous page"


class Cursor:
    """The opaque `cursor` of keyset pagination: the last id of the previous page."""

    @staticmethod
    def encode(last_id: int) -> str:
        return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")

    @staticmethod
    def decode(cursor: str) -> int:
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            prefix, _, number = text.partition(":")
            value = int(number)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidCursorError() from None
        if prefix != "id" or not 0 <= value <= MAX_TASK_ID or Cursor.encode(value) != cursor:
            raise InvalidCursorError()  # only what `encode` issues: CURSOR_PATTERN, exactly
        return value


def next_link(query: Sequence[tuple[str, str]], last_id: int) -> str:
    """The `Link` to the page after `last_id`, keeping the request's other parameters."""
    params = [(k, v) for k, v in query if k != "cursor"]
    params.append(("cursor", Cursor.encode(last_id)))
    return f'<{PREFIX}?{urlencode(params)}>; rel="next"'


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
    response: Response,
    session: Session,
    user: CurrentUser,
    completed: Annotated[bool | None, Query(description="Only (un)completed tasks")] = None,
    priority: Annotated[Priority | None, Query(description="Only this priority")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size")] = (
        DEFAULT_PAGE_SIZE
    ),
    cursor: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Opaque; from the previous page's Link",
            json_schema_extra={"pattern": CURSOR_PATTERN},
        ),
    ] = None,
) -> Sequence[Any]:
    rows = await service.list_tasks(
        session,
        user.sub,
        completed=completed,
        priority=priority,
        after_id=Cursor.decode(cursor) if cursor is not None else None,
        limit=limit,
    )
    if len(rows) > limit:
        rows = rows[:limit]
        response.headers["Link"] = next_link(request.query_params.multi_items(), rows[-1]["id"])
    return rows


@router.post(
    "",
    response_model=TaskRead,
    status_code=201,
    summary="Create a task",
    responses=BODY_ERRORS,
    dependencies=[Depends(require_json)],
)
async def create_task(
    body: TaskCreate, response: Response, session: Session, user: CurrentUser
) -> Any:
    row = await service.create_task(session, user.sub, body)
    response.headers["Location"] = location(row["id"])
    return row


@router.get("/{task_id}", response_model=TaskRead, summary="Get a task", responses=NOT_FOUND)
async def get_task(task_id: TaskId, session: Session, user: CurrentUser) -> Any:
    return await service.get_task(session, user.sub, task_id)


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
    task_id: TaskId, body: TaskUpdate, session: Session, user: CurrentUser
) -> Any:
    changes = body.model_dump(exclude_unset=True)
    return await service.update_task(session, user.sub, task_id, changes)


@router.delete(
    "/{task_id}",
    status_code=204,
    summary="Delete a task",
    responses=NOT_FOUND,
    response_class=Response,
)
async def delete_task(task_id: TaskId, session: Session, user: CurrentUser) -> None:
    await service.delete_task(session, user.sub, task_id)
