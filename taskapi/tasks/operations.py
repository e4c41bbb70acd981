"""Every task operation, once: parsed inputs and the caller's id in, the reply out.

Both request paths call these (the FastAPI routes in `router`, the fast path in
`fastpath`); only their parsing differs. Each operation runs in the request's unit of work,
which commits before the reply is sent.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from starlette.responses import Response

from taskapi import search
from taskapi.db import UnitOfWork
from taskapi.db.failures import ListRowMissingError
from taskapi.errors import (
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    PreconditionFailedError,
    SyncTokenExpiredError,
    TaskNotFoundError,
)
from taskapi.events import NO_EVENTS, Events
from taskapi.lists.errors import UnknownListError
from taskapi.lists.ownership import require_list
from taskapi.tasks import queries
from taskapi.tasks.contract import (
    EntityTags,
    KeysetCursor,
    QueryItems,
    SyncToken,
    TaskFilter,
    etag,
    location,
    next_link,
    sort_values,
)
from taskapi.tasks.render import RankedTask, RenderedTask, page_json
from taskapi.tasks.schemas import Priority, TaskCreate, TaskUpdate

Header = tuple[bytes, bytes]
_JSON = (b"content-type", b"application/json")
_NO_BODY = frozenset({204, 304})
_REPLAYED = (b"idempotent-replayed", b"true")


class Reply(NamedTuple):
    """An operation's answer: status, body (JSON, or empty for 204/304) and extra headers."""

    status: int
    body: bytes = b""
    headers: tuple[Header, ...] = ()

    def wire_headers(self) -> list[Header]:
        """Every header of the reply, as sent."""
        if self.status in _NO_BODY:
            return list(self.headers)
        return [*self.headers, _JSON, (b"content-length", str(len(self.body)).encode())]


class ReplyResponse(Response):
    """A `Reply` as a Starlette response (for the FastAPI routes)."""

    def __init__(self, reply: Reply) -> None:
        self.status_code = reply.status
        self.body = reply.body
        self.background = None
        self.raw_headers = reply.wire_headers()


class SyncPolicy(NamedTuple):
    """How long the sync features remember (idempotency keys, and deletions for the feed),
    and whom they tell what they answered (replays and the feed's answers, for metrics)."""

    idempotency_ttl: timedelta
    tombstone_retention: timedelta
    events: Events = NO_EVENTS


def _task_reply(status: int, task: RenderedTask, *headers: Header) -> Reply:
    return Reply(status, task.json, (*headers, (b"etag", etag(task.version))))


async def get_task(
    work: UnitOfWork, owner_id: str, task_id: int, if_none_match: EntityTags | None = None
) -> Reply:
    """One of the owner's tasks, or TASK_NOT_FOUND; 304 when `If-None-Match` names it."""
    task = await work.fetch_one(queries.GET_TASK, {"owner_id": owner_id, "task_id": task_id})
    if task is None:
        raise TaskNotFoundError()
    if if_none_match is not None and if_none_match.weak_match(task.version):
        return Reply(304, b"", ((b"etag", etag(task.version)),))
    return _task_reply(200, task)


async def list_tasks(work: UnitOfWork, owner_id: str, page: TaskFilter, query: QueryItems) -> Reply:
    """A page of the owner's tasks, filtered and sorted (by default in id order); `Link`
    to the next page when more follow (one more row than the page is read to tell)."""
    if page.keyed():
        return await _keyed_page(work, owner_id, page, query)
    completed, priority, after_id, limit = page[:4]
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


_BOUND = ("due_after", "due_before", "completed_after", "completed_before")


async def _keyed_page(
    work: UnitOfWork, owner_id: str, page: TaskFilter, query: QueryItems
) -> Reply:
    """A page with filters or a sort: keyset pagination on the sort's values and id, with
    a cursor bound to the sort and filters."""
    after = page.after
    shape = queries.PageShape(
        completed=page.completed is not None,
        priority=page.priority is not None,
        list="list" if page.list_id is not None else "inbox" if page.inbox else None,
        due_after=page.due_after is not None,
        due_before=page.due_before is not None,
        overdue=page.overdue,
        has_due=page.has_due,
        completed_after=page.completed_after is not None,
        completed_before=page.completed_before is not None,
        sort=tuple((key.field, key.descending) for key in page.sort),
        labels=len(page.labels),
        search=bool(page.search),
        after=None if after is None else tuple(value is None for value in after.values),
    )
    params: dict[str, Any] = {"owner_id": owner_id, "page_size": page.limit + 1}
    if page.completed is not None:
        params["completed"] = page.completed
    if page.priority is not None:
        params["priority"] = page.priority.value
    if page.list_id is not None:
        params["list_id"] = page.list_id
    for name in _BOUND:
        if getattr(page, name) is not None:
            params[name] = getattr(page, name)
    if page.overdue is not None:
        params["now"] = datetime.now(UTC)
    for index, key in enumerate(page.labels):
        params[f"label_{index}"] = key
    if page.search:  # each backend's statement reads its own
        params["search_query"] = search.postgres_query(page.search)
        params["search_match"] = search.sqlite_match(page.search)
        params["search_words"] = search.rank_words(page.search)
    if after is not None:
        params["after_id"] = after.id
        for index, value in enumerate(after.values):
            if value is not None:
                params[f"after_{index}"] = value
    rows = await work.fetch_all(queries.page_statement(shape), params)
    if len(rows) <= page.limit:
        return Reply(200, page_json(rows))
    rows = rows[: page.limit]
    last = rows[-1]
    rank = last.rank if isinstance(last, RankedTask) else None
    cursor = KeysetCursor(sort_values(page, last.json, rank), last.id, page.digest()).encode()
    return Reply(200, page_json(rows), ((b"link", next_link(query, last.id, cursor).encode()),))


async def create_task(
    work: UnitOfWork,
    owner_id: str,
    data: TaskCreate,
    key: str | None = None,
    policy: SyncPolicy | None = None,
) -> Reply:
    """Insert a task for the owner and return it, in one round trip. With an
    `Idempotency-Key`, the first answer is stored with the task (one transaction) and
    replayed to every retry within the policy's time."""
    if key is None:
        return _created(await _insert(work, owner_id, data))
    assert policy is not None
    request_hash = hashlib.sha256(data.model_dump_json().encode()).hexdigest()
    if not await work.try_lock(_lock_name(owner_id, key)):
        raise IdempotencyKeyInUseError()
    named = {"owner_id": owner_id, "key": key}
    stored = await work.fetch_one(queries.GET_KEY, named)
    now = datetime.now(UTC)
    if stored is not None:
        if stored["created_at"] > now - policy.idempotency_ttl:
            if stored["request_hash"] != request_hash:
                raise IdempotencyKeyReusedError()
            policy.events.idempotency_replayed()
            return Reply(
                stored["status"],
                stored["body"],
                (_location(stored["task_id"]), (b"etag", etag(1)), _REPLAYED),
            )
        await work.fetch_one(queries.DELETE_KEY, named)  # expired: the key is free again
    task = await _insert(work, owner_id, data)
    reply = _created(task)
    record = {"request_hash": request_hash, "status": reply.status, "body": reply.body}
    await work.fetch_one(
        queries.STORE_KEY, {**named, **record, "task_id": task.id, "created_at": now}
    )
    return reply


def _location(task_id: int) -> Header:
    return (b"location", location(task_id).encode())


def _lock_name(owner_id: str, key: str) -> int:
    """A 63-bit lock name for one user's key (advisory locks are named by bigints)."""
    digest = hashlib.sha256(f"{owner_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _created(task: RenderedTask) -> Reply:
    return _task_reply(201, task, _location(task.id))


async def _insert(work: UnitOfWork, owner_id: str, data: TaskCreate) -> RenderedTask:
    await require_list(work, owner_id, data.list_id, "body.list_id")
    now = datetime.now(UTC)
    values = {
        "title": data.title,
        "description": data.description,
        "completed": data.completed,
        "priority": data.priority.value if data.priority else None,
        "due_date": data.due_date,
        "list_id": data.list_id,
        "user_id": owner_id,
        "created_at": now,
        "updated_at": now,
        "completed_at": now if data.completed else None,
        "owner_id": owner_id,
    }
    if data.labels:
        await work.begin()  # the task and its labels, one transaction
    try:
        task = await work.fetch_one(queries.CREATE_TASK, values)
    except ListRowMissingError:  # deleted since `require_list` saw it
        raise UnknownListError("body.list_id") from None
    assert task is not None
    if data.labels:
        task = await _set_labels(work, owner_id, task.id, data.labels)
    return task


async def _set_labels(
    work: UnitOfWork, owner_id: str, task_id: int, labels: list[str]
) -> RenderedTask:
    """Replace the labels of the owner's task (just written in this transaction) and
    return the task as it now is."""
    params: dict[str, Any] = {"owner_id": owner_id, "task_id": task_id}
    await work.fetch_all(queries.CLEAR_LABELS, params)
    if labels:
        document = orjson.dumps([[label.lower(), label] for label in labels]).decode()
        await work.fetch_all(queries.SET_LABELS, {**params, "labels": document})
    task = await work.fetch_one(queries.GET_TASK, params)
    assert task is not None
    return task


async def update_task(
    work: UnitOfWork,
    owner_id: str,
    task_id: int,
    data: TaskUpdate,
    if_match: EntityTags | None = None,
) -> Reply:
    """Apply the fields sent (and advance updated_at and the version) in one round trip,
    when `If-Match` (if sent) names the task's version; else TASK_NOT_FOUND or
    PRECONDITION_FAILED. PUT and PATCH (JSON Merge Patch) alike."""
    values = data.model_dump(exclude_unset=True)
    await require_list(work, owner_id, values.get("list_id"), "body.list_id")
    labels: list[str] | None = None
    if "labels" in values:
        labels = values.pop("labels") or []
        await work.begin()  # the task and its labels, one transaction
    if isinstance(values.get("priority"), Priority):
        values["priority"] = values["priority"].value
    values["updated_at"] = datetime.now(UTC)
    params = {f"new_{name}": value for name, value in values.items()}
    params.update(owner_id=owner_id, task_id=task_id)
    versions = await _expected(work, owner_id, task_id, if_match, params)
    statement = queries.update_statement(frozenset(values), len(versions))
    try:
        task = await work.fetch_one(statement, params)
    except ListRowMissingError:  # deleted since `require_list` saw it
        raise UnknownListError("body.list_id") from None
    if task is None:
        raise await _why_not(work, owner_id, task_id)
    if labels is not None:
        task = await _set_labels(work, owner_id, task_id, labels)
    return _task_reply(200, task)


async def delete_task(
    work: UnitOfWork, owner_id: str, task_id: int, if_match: EntityTags | None = None
) -> Reply:
    """Delete one of the owner's tasks (leaving a tombstone for the change feed) when
    `If-Match` (if sent) names its version; else TASK_NOT_FOUND or PRECONDITION_FAILED."""
    params: dict[str, Any] = {"owner_id": owner_id, "task_id": task_id}
    versions = await _expected(work, owner_id, task_id, if_match, params)
    deleted = await work.fetch_one(queries.delete_statement(len(versions)), params)
    if deleted is None:
        raise await _why_not(work, owner_id, task_id)
    return Reply(204)


async def _expected(
    work: UnitOfWork,
    owner_id: str,
    task_id: int,
    if_match: EntityTags | None,
    params: dict[str, Any],
) -> tuple[int, ...]:
    """The versions `If-Match` allows, bound into `params` (none: any version); an
    `If-Match` that can match no version fails here, without a write."""
    versions = () if if_match is None else if_match.strong_match_versions()
    if versions is None:
        return ()  # `If-Match: *`: any version of an existing task
    if if_match is not None and not versions:  # only weak tags: never a strong match
        raise await _why_not(work, owner_id, task_id)
    for n, version in enumerate(versions):
        params[f"if_version_{n}"] = version
    return versions


async def _why_not(work: UnitOfWork, owner_id: str, task_id: int) -> Exception:
    """Why a conditional write wrote nothing: the task is not the owner's, or it changed."""
    found = await work.fetch_one(queries.TASK_VERSION, {"owner_id": owner_id, "task_id": task_id})
    return TaskNotFoundError() if found is None else PreconditionFailedError()


async def task_changes(
    work: UnitOfWork, owner_id: str, since: str | None, limit: int, policy: SyncPolicy
) -> Reply:
    """The owner's changes after a sync token, in the order they committed: each changed
    task once, in its latest state, and a tombstone for each deleted one. Without a token,
    every current task (no tombstones). `next` is the token to ask with next time."""
    now = int(time.time())
    params: dict[str, Any] = {"owner_id": owner_id, "page_size": limit + 1}
    if since is None:
        position = SyncToken(0, 0, now)
        statement = queries.feed_statement(after=False, tombstones=False)
    else:
        position = SyncToken.decode(since, owner_id)
        if position.issued < now - policy.tombstone_retention.total_seconds():
            policy.events.feed_requested("expired")
            raise SyncTokenExpiredError()
        params.update(after_seq=position.change_seq, after_id=position.id)
        statement = queries.feed_statement(after=True, tombstones=True)
    changes = await work.fetch_all(statement, params)
    more = len(changes) > limit
    if more:
        changes = changes[:limit]
    if changes:
        position = SyncToken(changes[-1].change_seq, changes[-1].id, now)
    policy.events.feed_requested("full" if since is None else "changes" if changes else "unchanged")
    token = position._replace(issued=now).encode(owner_id)
    body = b'{"changes":[%s],"next":"%s","more":%s}' % (
        b",".join([change.json for change in changes]),
        token.encode(),
        b"true" if more else b"false",
    )
    return Reply(200, body)
