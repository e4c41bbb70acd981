"""HTTP endpoints of `/api/v1/lists`: FastAPI parses and declares; `operations` answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator

from taskapi.auth.dependencies import CurrentUser
from taskapi.db import Session, UnitOfWorkRoute
from taskapi.lists import operations
from taskapi.lists.operations import PREFIX
from taskapi.lists.schemas import ListRead, ListWrite
from taskapi.tasks.contract import (
    DEFAULT_PAGE_SIZE,
    MAX_CURSOR_LENGTH,
    MAX_PAGE_SIZE,
    MAX_TASK_ID,
    Cursor,
    plain_digits,
)
from taskapi.tasks.cursorpattern import CURSOR_PATTERN
from taskapi.tasks.operations import ReplyResponse
from taskapi.tasks.router import BODY_ERRORS, COMMON_ERRORS, _error, require_json

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: _error("List not found, or owned by someone else (`LIST_NOT_FOUND`)"),
}
ListId = Annotated[
    int, Path(ge=1, le=MAX_TASK_ID, description="The list's id"), BeforeValidator(plain_digits)
]
MOVE_PATTERN = r"^(inbox|[1-9][0-9]{0,18})$"

router = APIRouter(
    prefix=PREFIX, tags=["lists"], responses=COMMON_ERRORS, route_class=UnitOfWorkRoute
)


@router.get("", response_model=list[ListRead], summary="List the user's lists")
async def list_lists(
    request: Request,
    work: Session,
    user: CurrentUser,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_PAGE_SIZE, description="Page size"),
        BeforeValidator(plain_digits),
    ] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="Opaque; from the previous page's Link",
            json_schema_extra={"pattern": CURSOR_PATTERN},
        ),
    ] = None,
) -> Response:
    after_id = Cursor.decode(cursor) if cursor is not None else None
    query = request.query_params.multi_items()
    return ReplyResponse(await operations.list_lists(work, user.sub, after_id, limit, query))


@router.post(
    "",
    response_model=ListRead,
    status_code=201,
    summary="Create a list",
    responses=BODY_ERRORS,
    dependencies=[Depends(require_json)],
)
async def create_list(body: ListWrite, work: Session, user: CurrentUser) -> Response:
    return ReplyResponse(await operations.create_list(work, user.sub, body))


@router.get("/{list_id}", response_model=ListRead, summary="Get a list", responses=NOT_FOUND)
async def get_list(list_id: ListId, work: Session, user: CurrentUser) -> Response:
    return ReplyResponse(await operations.get_list(work, user.sub, list_id))


@router.patch(
    "/{list_id}",
    response_model=ListRead,
    summary="Rename a list",
    responses={**NOT_FOUND, **BODY_ERRORS},
    dependencies=[Depends(require_json)],
)
async def rename_list(
    list_id: ListId, body: ListWrite, work: Session, user: CurrentUser
) -> Response:
    return ReplyResponse(await operations.rename_list(work, user.sub, list_id, body))


@router.delete(
    "/{list_id}",
    status_code=204,
    summary="Delete a list and its tasks, or move them",
    description=(
        "Without `move_tasks_to`, the list's tasks are deleted with it, in one transaction "
        "(each appears as a deletion in the change feed). With `move_tasks_to=<list id>` or "
        "`inbox` they are moved there first (each a change in the feed); a target that is not "
        "another of the caller's lists is 422 `LIST_NOT_FOUND`."
    ),
    responses={
        **NOT_FOUND,
        422: _error("Invalid input, or `move_tasks_to` names no other list of the caller's"),
    },
    response_class=Response,
)
async def delete_list(
    list_id: ListId,
    work: Session,
    user: CurrentUser,
    move_tasks_to: Annotated[
        str | None,
        Query(
            pattern=MOVE_PATTERN,
            max_length=19,
            description="Move the list's tasks to this list (an id) or `inbox` instead",
        ),
    ] = None,
) -> Response:
    return ReplyResponse(await operations.delete_list(work, user.sub, list_id, move_tasks_to))
