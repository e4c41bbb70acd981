"""HTTP endpoints of `/api/v1/tasks`: FastAPI parses and declares (OpenAPI, `/docs`); the
operations in `taskapi.tasks.operations` answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskapi import search
from taskapi.auth.dependencies import CurrentUser
from taskapi.db import Session, UnitOfWorkRoute
from taskapi.errors import READ_ONLY_ROUTE, ErrorBody, UnsupportedMediaTypeError
from taskapi.models import LABELS_PER_TASK
from taskapi.search import MAX_QUERY_LENGTH
from taskapi.tasks import operations
from taskapi.tasks.contract import (
    DEFAULT_PAGE_SIZE,
    ENTITY_TAGS_PATTERN,
    MAX_KEYSET_CURSOR_LENGTH,
    MAX_PAGE_SIZE,
    MAX_PRECONDITION_LENGTH,
    MAX_SORT_LENGTH,
    MAX_SYNC_TOKEN_LENGTH,
    MAX_TASK_ID,
    PREFIX,
    SORT_PATTERN,
    SYNC_TOKEN_PATTERN,
    Cursor,
    EntityTags,
    KeysetCursor,
    TaskFilter,
    idempotency_key,
    is_json_content_type,
    parse_sort,
    plain_digits,
)
from taskapi.tasks.cursorpattern import any_cursor_pattern
from taskapi.tasks.operations import ReplyResponse
from taskapi.tasks.schemas import (
    LabelText,
    Priority,
    TaskCreate,
    TaskRead,
    TaskUpdate,
    as_utc,
    iso_text,
)


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
PRECONDITION: dict[int | str, dict[str, Any]] = {
    412: _error("`If-Match` does not name the task's current `ETag`: nothing was changed"),
}
ETAG_HEADER = {
    "ETag": {"description": 'The task\'s version, e.g. `"3"`', "schema": {"type": "string"}}
}


def _task_response(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": {**ETAG_HEADER, **headers}}


def _precondition(description: str) -> Any:
    """An `If-Match`/`If-None-Match` header: optional, and never null (so the schema
    says `string` with its pattern, not `string | null`)."""
    return Header(
        None,
        max_length=MAX_PRECONDITION_LENGTH,
        pattern=ENTITY_TAGS_PATTERN,
        description=description,
    )


IF_MATCH = (
    'Write only if the task\'s `ETag` is one of these (e.g. `"3"`), or `*` for any: else 412 '
    "`PRECONDITION_FAILED` and nothing changes"
)

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


LIST_PATTERN = r"^(inbox|[1-9][0-9]{0,18})$"
ANY_CURSOR_PATTERN = any_cursor_pattern(MAX_KEYSET_CURSOR_LENGTH)
QueryMoment = Annotated[
    datetime,
    BeforeValidator(iso_text),
    AfterValidator(as_utc),
]


def _moment(description: str) -> Any:
    return Query(
        description=description + "; ISO 8601, a value without offset is UTC",
        json_schema_extra={"format": "date-time"},
    )


@router.get(
    "",
    response_model=list[TaskRead],
    summary="List the user's tasks",
    responses={
        414: _error(
            "The request target (path and query) is over 8 KiB: possible with the longest "
            "cursor, twenty labels and a search together"
        )
    },
    description=(
        "A page of the authenticated user's tasks, by default oldest first. Every filter "
        "combines with every other. When more follow, the "
        '`Link: <...>; rel="next"` header holds the URL of the next page; its cursor is bound '
        "to the sort and filters (a cursor used with others is 422)."
    ),
)
async def list_tasks(
    request: Request,
    work: Session,
    user: CurrentUser,
    completed: Annotated[bool | None, Query(description="Only (un)completed tasks")] = None,
    priority: Annotated[Priority | None, Query(description="Only this priority")] = None,
    list_id: Annotated[
        str | None,
        Query(
            pattern=LIST_PATTERN,
            max_length=19,
            description="Only the tasks of this list (an id), or of the inbox (`inbox`)",
        ),
    ] = None,
    due_after: Annotated[QueryMoment | None, _moment("Only tasks due at or after this")] = None,
    due_before: Annotated[QueryMoment | None, _moment("Only tasks due before this")] = None,
    overdue: Annotated[
        bool | None,
        Query(description="true: only tasks due before now and not completed; false: others"),
    ] = None,
    has_due: Annotated[
        bool | None, Query(description="Only tasks with (without) a due date")
    ] = None,
    completed_after: Annotated[
        QueryMoment | None, _moment("Only tasks completed at or after this")
    ] = None,
    completed_before: Annotated[
        QueryMoment | None, _moment("Only tasks completed before this")
    ] = None,
    label: Annotated[
        list[LabelText] | None,
        Query(
            max_length=LABELS_PER_TASK,
            description=(
                "Only tasks carrying this label (without regard to case); repeat it (up to "
                "20 times): a task must carry all"
            ),
        ),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_QUERY_LENGTH,
            description=(
                "Search the title and description: every word (a run of letters and digits) "
                "must match a word, the last one as a prefix, without regard to case or "
                "accents. A `q` without a letter or digit has no words: it matches every task"
            ),
        ),
    ] = None,
    sort: Annotated[
        str | None,
        Query(
            pattern=SORT_PATTERN,
            max_length=MAX_SORT_LENGTH,
            description=(
                "Comma-separated keys (a key repeated is redundant: the first decides): "
                "`due_date`, `priority` (high "
                "first), `created_at`, `updated_at`, `completed_at`, `title`, `relevance` "
                "(with `q`: the best match first; without, every task ranks alike); a "
                "leading `-` reverses one. Tasks without the value come last either way; `id` "
                "breaks ties"
            ),
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_PAGE_SIZE, description="Page size"),
        BeforeValidator(plain_digits),
    ] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_KEYSET_CURSOR_LENGTH,
            description=(
                "Opaque; from the previous page's Link (bound to the sort and filters it was "
                "issued for: used with others, 422)"
            ),
            json_schema_extra={"pattern": ANY_CURSOR_PATTERN},
        ),
    ] = None,
) -> Response:
    words = search.words(q) if q is not None else ()
    keys = parse_sort(sort)
    if not words:  # every task ranks alike: relevance orders nothing
        keys = tuple(key for key in keys if key.field != "relevance")
    page = TaskFilter(
        completed,
        priority,
        None,
        limit,
        list_id=int(list_id) if list_id is not None and list_id != "inbox" else None,
        inbox=list_id == "inbox",
        due_after=due_after,
        due_before=due_before,
        overdue=overdue,
        has_due=has_due,
        completed_after=completed_after,
        completed_before=completed_before,
        sort=keys,
        labels=tuple(dict.fromkeys(name.lower() for name in label or ())),
        search=words,
    )
    if cursor is not None:
        if page.keyed():
            page = page._replace(after=KeysetCursor.decode(cursor, page))
        else:
            page = page._replace(after_id=Cursor.decode(cursor))
    query = request.query_params.multi_items()
    return ReplyResponse(await operations.list_tasks(work, user.sub, page, query))


@router.post(
    "",
    response_model=TaskRead,
    status_code=201,
    summary="Create a task",
    description=(
        "With an `Idempotency-Key`, a retry (the same key and body, within "
        "`IDEMPOTENCY_TTL_HOURS`) gets the first answer again, byte for byte, with "
        "`Idempotent-Replayed: true`, and no second task is created."
    ),
    responses={
        **BODY_ERRORS,
        201: _task_response(
            "The task, created (or the first answer, replayed)",
            Location={"description": "The task's URL", "schema": {"type": "string"}},
        ),
        409: _error("A request with this `Idempotency-Key` is still running; see `Retry-After`"),
        422: _error(
            "Invalid input (`VALIDATION_ERROR`), or the `Idempotency-Key` was used with another "
            "body (`IDEMPOTENCY_KEY_REUSED`)"
        ),
    },
    dependencies=[Depends(require_json)],
)
async def create_task(
    request: Request,
    body: TaskCreate,
    work: Session,
    user: CurrentUser,
    idempotency_key_header: str = Header(  # optional, never null
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="1-255 visible ASCII characters naming this create across retries",
    ),
) -> Response:
    key = idempotency_key(idempotency_key_header)
    sync = request.app.services.sync
    return ReplyResponse(await operations.create_task(work, user.sub, body, key, sync))


class Changes(BaseModel):
    """A page of the change feed."""

    changes: list[TaskRead | Tombstone] = Field(
        description="Changed tasks in their latest state, and deleted ones, in commit order"
    )
    next: str = Field(description="The sync token to send as `since` next time")
    more: bool = Field(description="Whether more changes follow now (ask again with `next`)")


class Tombstone(BaseModel):
    """A deleted task, as the change feed reports it."""

    id: int
    deleted: bool = Field(description="Always true")
    version: int


Changes.model_rebuild()


@router.get(
    "/changes",
    response_model=Changes,
    summary="What changed since a sync token",
    description=(
        "Without `since`: every current task (no deletions), a page at a time; the last "
        "page's `next` is the client's sync point. With `since`: every task created, "
        "updated or deleted after it, each once, in its latest state, a deleted one as "
        '`{"id", "deleted": true, "version"}`. A client must ignore deletions of tasks it '
        "does not hold. Deletions are kept `TOMBSTONE_RETENTION_DAYS`: an older token is "
        "410 `SYNC_TOKEN_EXPIRED` (sync again without `since`)."
    ),
    responses={
        410: _error("The sync token is older than the deletions kept: sync again"),
    },
)
async def task_changes(
    request: Request,
    work: Session,
    user: CurrentUser,
    since: str = Query(  # optional, never null
        None,
        max_length=MAX_SYNC_TOKEN_LENGTH,
        pattern=SYNC_TOKEN_PATTERN,
        description="A `next` of an earlier answer (another user's is a 422)",
    ),
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_PAGE_SIZE, description="Changes per page"),
        BeforeValidator(plain_digits),
    ] = DEFAULT_PAGE_SIZE,
) -> Response:
    sync = request.app.services.sync
    return ReplyResponse(await operations.task_changes(work, user.sub, since, limit, sync))


@router.api_route(
    "/changes",
    methods=["POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
    name=READ_ONLY_ROUTE,
)
async def changes_are_read_only() -> None:
    """405 (not a 422 for the task id "changes", which `/{task_id}` would answer)."""
    raise StarletteHTTPException(405)


@router.get(
    "/{task_id}",
    response_model=TaskRead,
    summary="Get a task",
    responses={
        **NOT_FOUND,
        200: _task_response("The task"),
        304: {"description": "`If-None-Match` names the current `ETag`", "headers": ETAG_HEADER},
    },
)
async def get_task(
    task_id: TaskId,
    work: Session,
    user: CurrentUser,
    if_none_match: str = _precondition("304 if the task's `ETag` is one of these, or `*`"),
) -> Response:
    tags = EntityTags.parse("If-None-Match", if_none_match)
    return ReplyResponse(await operations.get_task(work, user.sub, task_id, tags))


UPDATE_DESCRIPTION = (
    "Only the fields sent change; `null` clears `description`, `priority` or `due_date`; "
    "`null` for `title` or `completed` is a 422. Read-only fields (`id`, `user_id`, "
    "`created_at`, `updated_at`, `version`) are ignored, so a task read with GET can be sent "
    "back as it is."
)


@router.put(
    "/{task_id}",
    response_model=TaskRead,
    summary="Update a task (partial, as the specification's PUT)",
    description=UPDATE_DESCRIPTION,
    responses={**NOT_FOUND, **BODY_ERRORS, **PRECONDITION, 200: _task_response("The task")},
    dependencies=[Depends(require_json)],
)
async def update_task(
    task_id: TaskId,
    body: TaskUpdate,
    work: Session,
    user: CurrentUser,
    if_match: str = _precondition(IF_MATCH),
) -> Response:
    tags = EntityTags.parse("If-Match", if_match)
    return ReplyResponse(await operations.update_task(work, user.sub, task_id, body, tags))


@router.patch(
    "/{task_id}",
    response_model=TaskRead,
    summary="Update a task (JSON Merge Patch, RFC 7396)",
    description=UPDATE_DESCRIPTION
    + " Send `application/merge-patch+json` (or `application/json`).",
    responses={**NOT_FOUND, **BODY_ERRORS, **PRECONDITION, 200: _task_response("The task")},
    dependencies=[Depends(require_json)],
)
async def patch_task(
    task_id: TaskId,
    work: Session,
    user: CurrentUser,
    body: Annotated[
        TaskUpdate,
        Body(media_type="application/merge-patch+json"),
    ],
    if_match: str = _precondition(IF_MATCH),
) -> Response:
    tags = EntityTags.parse("If-Match", if_match)
    return ReplyResponse(await operations.update_task(work, user.sub, task_id, body, tags))


@router.delete(
    "/{task_id}",
    status_code=204,
    summary="Delete a task",
    responses={**NOT_FOUND, **PRECONDITION},
    response_class=Response,
)
async def delete_task(
    task_id: TaskId, work: Session, user: CurrentUser, if_match: str = _precondition(IF_MATCH)
) -> Response:
    tags = EntityTags.parse("If-Match", if_match)
    return ReplyResponse(await operations.delete_task(work, user.sub, task_id, tags))
