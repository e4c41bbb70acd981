"""Task statements. Every one is built once, from one owner-filtered base.

The owner filter is a bind parameter of the base statements below, so no query on tasks
can be written without it, and each statement's SQL is compiled once per process. Every
query returning tasks returns them rendered (`RenderedTask`): as PostgreSQL builds them in
its SQL, or as orjson builds them from SQLite's columns.

Every write takes the owner's next change number (`users.change_seq`, under that row's
lock) for the change feed, in the same statement on PostgreSQL (a data-modifying `WITH`),
by a trigger on SQLite (migration 0002); a delete leaves a tombstone the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    CTE,
    BigInteger,
    Boolean,
    Float,
    Select,
    String,
    Table,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    table,
    text,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ColumnElement

from taskapi.db import Query, Row
from taskapi.models import idempotency_keys, task_labels, task_tombstones, tasks, users
from taskapi.tasks.contract import PRIORITY_RANK
from taskapi.tasks.render import (
    LABELS_SQL,
    RankedTask,
    RenderedTask,
    rendered_from_columns,
    task_json,
    task_json_sql,
)

COLUMNS = (
    tasks.c.id,
    tasks.c.title,
    tasks.c.description,
    tasks.c.completed,
    tasks.c.priority,
    tasks.c.due_date,
    tasks.c.list_id,
    tasks.c.user_id,
    tasks.c.created_at,
    tasks.c.updated_at,
    tasks.c.completed_at,
    tasks.c.version,
)

# A task's labels: SQLite returns them as a JSON array (text), rendered with the columns.
LABELS: ColumnElement[Any] = literal_column(
    "(SELECT json_group_array(name) FROM (SELECT task_labels.name AS name FROM task_labels"
    " WHERE task_labels.task_id = tasks.id ORDER BY task_labels.position))"
).label("labels")
TASK_COLUMNS = (*COLUMNS, LABELS)
TASK_JSON_SQL = task_json_sql(COLUMNS, [("labels", LABELS_SQL)])
"""PostgreSQL's rendering of a task, for the change feed (its pages mix tasks and tombstones)."""
# What PostgreSQL returns for a task: its columns and its labels as an array (in the
# response model's field order), rendered by `rendered_from_record`.
LABEL_ARRAY: ColumnElement[Any] = literal_column(
    "coalesce((SELECT array_agg(task_labels.name ORDER BY task_labels.position)"
    " FROM task_labels WHERE task_labels.task_id = tasks.id), '{}')"
).label("labels")
RENDERED = (*COLUMNS, LABEL_ARRAY)
TASK_FIELDS = tuple(str(column.name) for column in RENDERED)  # plain `str`s
"""A task's fields in the response model's order: `RENDERED`'s and `TASK_COLUMNS`'s."""
_VERSION = TASK_FIELDS.index("version")


def rendered_from_record(record: Any) -> RenderedTask:
    """A PostgreSQL record of `RENDERED`, rendered by orjson (why not in PostgreSQL's SQL:
    docs/design.md, "The fast path")."""
    document = task_json(dict(zip(TASK_FIELDS, record, strict=False)))
    return RenderedTask(record[0], record[_VERSION], document)


def ranked_from_record(record: Any) -> RankedTask:
    """A PostgreSQL record of `RENDERED` and the rank after it, rendered by orjson."""
    task_id, version, document = rendered_from_record(record)
    return RankedTask(task_id, version, document, record[len(TASK_FIELDS)])


MAX_ETAGS = 8
"""The most entity tags of one `If-Match` that are compared (more is a 422)."""


def _task_query(
    build: Callable[[Sequence[ColumnElement[Any]], bool], Executable],
) -> Query[RenderedTask]:
    """A query returning rendered tasks; `build(columns, postgres)` makes its statement."""
    return Query.shaped(
        build(TASK_COLUMNS, False),
        rendered_from_columns,
        build(RENDERED, True),
        rendered_from_record,
    )


# The one owner filter every statement below is built from.
OWNED = tasks.c.user_id == bindparam("owner_id")
THIS_TASK = tasks.c.id == bindparam("task_id")


def _owned_tasks(columns: Sequence[ColumnElement[Any]]) -> Select[Any]:
    return select(*columns).where(OWNED)


def _next_change() -> CTE:
    """PostgreSQL: the owner's next change number, taken under the lock of the owner's row,
    which its transaction holds until it commits: so the owner's changes commit in the
    order of their numbers, and a feed that has seen number N has seen every change up to
    N."""
    return (
        update(users)
        .where(users.c.id == bindparam("owner_id"))
        .values(change_seq=users.c.change_seq + 1)
        .returning(users.c.change_seq)
        .cte("next_change")
    )


def _changes_first(change: CTE) -> ColumnElement[bool]:
    """A condition that makes PostgreSQL take the owner's change number (and its row lock)
    before it touches a task row. Every write then locks the user's row before the task's:
    one order, so two writes of one task never deadlock (the order of `WITH` parts among
    themselves is otherwise unspecified)."""
    return exists(select(change.c.change_seq))


def _change_number(postgres: bool, change: CTE | None) -> ColumnElement[Any]:
    """The change number a write sets: from the `WITH` on PostgreSQL; on SQLite (one writer
    at a time) the owner's counter plus one, which a trigger then stores back."""
    if postgres:
        assert change is not None
        return select(change.c.change_seq).scalar_subquery()
    counter = select(users.c.change_seq + 1).where(users.c.id == bindparam("owner_id"))
    return counter.scalar_subquery()


def _expected_versions(count: int) -> ColumnElement[bool]:
    """`If-Match`: the task's version is one of `count` bound versions (none: any)."""
    if count == 0:
        return true()
    return tasks.c.version.in_([bindparam(f"if_version_{n}") for n in range(count)])


GET_TASK = _task_query(lambda columns, _: _owned_tasks(columns).where(THIS_TASK))
TASK_VERSION: Query[Row] = Query.of(select(tasks.c.version).where(OWNED, THIS_TASK))
INSERTED = (
    "title",
    "description",
    "completed",
    "priority",
    "due_date",
    "list_id",
    "user_id",
    "created_at",
    "updated_at",
    "completed_at",
)


def _create(columns: Sequence[ColumnElement[Any]], postgres: bool) -> Executable:
    change = _next_change() if postgres else None
    values: dict[str, Any] = {name: bindparam(name) for name in INSERTED}
    values["change_seq"] = _change_number(postgres, change)
    statement = insert(tasks).values(values).returning(*columns)
    return statement.add_cte(change) if change is not None else statement


CREATE_TASK = _task_query(_create)
UPDATABLE = ("title", "description", "completed", "priority", "due_date", "list_id", "updated_at")


@cache
def list_statement(completed: bool, priority: bool, after: bool) -> Query[RenderedTask]:
    """The page query for one combination of filters (8 at most, each compiled once)."""

    def build(columns: Sequence[ColumnElement[Any]], _: bool) -> Select[Any]:
        statement = _owned_tasks(columns)
        if completed:
            statement = statement.where(tasks.c.completed == bindparam("completed"))
        if priority:
            statement = statement.where(tasks.c.priority == bindparam("priority"))
        if after:
            statement = statement.where(tasks.c.id > bindparam("after_id"))
        return statement.order_by(tasks.c.id).limit(bindparam("page_size"))

    return _task_query(build)


class PageShape(NamedTuple):
    """Which filters a page query has, its sort, and its cursor's shape: one statement
    each, compiled once (bounded: the filters are fixed, the sorts at most seven keys)."""

    completed: bool
    priority: bool
    list: str | None  # "list", "inbox" or None
    due_after: bool
    due_before: bool
    overdue: bool | None
    has_due: bool | None
    completed_after: bool
    completed_before: bool
    sort: tuple[tuple[str, bool], ...]
    labels: int
    """How many labels a task must all carry."""
    search: bool
    """Whether a task must match the words of `q`."""
    after: tuple[bool, ...] | None
    """With a cursor: for each sort key, whether the cursor's value is null."""


def sort_expression(field: str, postgres: bool = False) -> ColumnElement[Any]:
    """A sort key's SQL: a column; for `priority` its rank (high 1 .. low 3, none NULL); for
    `relevance` the negated rank of the match (best first in ascending order)."""
    if field == "priority":
        return case(
            *[(tasks.c.priority == name, rank) for name, rank in PRIORITY_RANK.items()],
            else_=null(),
        )
    if field == "relevance":
        return -search_rank(postgres)
    column: ColumnElement[Any] = tasks.c[field]
    return column


# ---- search (`q=`; taskapi.search, migration 0004) ------------------------------------------

_DOCUMENT = func.taskapi_search_document(tasks.c.title, tasks.c.description)
_TSQUERY = func.to_tsquery(
    literal_column("'simple'"), func.taskapi_unaccent(bindparam("search_query", type_=String()))
)


def search_match(postgres: bool) -> ColumnElement[bool]:
    """The task matches every word of the query. PostgreSQL: the expression of the GIN index
    `ix_tasks_search` (with the owner, so only the owner's matches are read); SQLite: the
    FTS5 table's matches (its rowids are task ids)."""
    if postgres:
        return _DOCUMENT.op("@@", return_type=Boolean)(_TSQUERY)
    fts: Select[Any] = select(literal_column("rowid")).select_from(table("tasks_fts"))
    fts = fts.where(literal_column("tasks_fts").op("MATCH")(bindparam("search_match")))
    return tasks.c.id.in_(fts.scalar_subquery())


def search_rank(postgres: bool) -> ColumnElement[float]:
    """How well the task matches the query (higher is better; taskapi.search)."""
    if postgres:
        return func.ts_rank(_DOCUMENT, _TSQUERY, type_=Float())
    words = bindparam("search_words", type_=String())
    return func.taskapi_rank(tasks.c.title, tasks.c.description, words, type_=Float())


NEVER_NULL = frozenset({"title", "created_at", "updated_at", "relevance"})


def _never_null(shape: PageShape) -> set[str]:
    """The sort fields no row of the page can lack: by the schema, or by a filter."""
    known = set(NEVER_NULL)
    if shape.due_after or shape.due_before or shape.overdue or shape.has_due:
        known.add("due_date")
    if shape.completed_after or shape.completed_before:
        known.add("completed_at")
    return known


def _after_position(shape: PageShape, postgres: bool) -> ColumnElement[bool]:
    """Rows after the cursor in the page's order: each key in its direction with missing
    values last, then `id`. Built from the last key outwards:
    after(i) = e IS NULL AND after(i+1)                       (the cursor's value is null)
    after(i) = e IS NULL OR e > v OR (e = v AND after(i+1))   (else; `<` when reversed),
    plus `e >= v` (`<=`) when no row lacks the key, which bounds an index scan."""
    assert shape.after is not None
    known = _never_null(shape)
    condition: ColumnElement[bool] = tasks.c.id > bindparam("after_id")
    for index in reversed(range(len(shape.sort))):
        field, descending = shape.sort[index]
        expression = sort_expression(field, postgres)
        if shape.after[index]:
            condition = expression.is_(None) & condition
            continue
        value = bindparam(f"after_{index}", type_=expression.type)
        beyond = expression < value if descending else expression > value
        step = beyond | ((expression == value) & condition)
        if field not in known:
            step = expression.is_(None) | step
        condition = step
    if shape.sort and not shape.after[0] and shape.sort[0][0] in known:
        field, descending = shape.sort[0]
        first = sort_expression(field, postgres)
        value = bindparam("after_0", type_=first.type)
        condition = ((first <= value) if descending else (first >= value)) & condition
    return condition


@lru_cache(maxsize=1024)
def page_statement(shape: PageShape) -> Query[RenderedTask | RankedTask]:
    """The page query for one shape of filters, sort and cursor. Sorted by relevance, each
    row also has its sort value (`RankedTask.rank`), which no document holds."""
    ranked = any(field == "relevance" for field, _ in shape.sort)

    def build(columns: Sequence[ColumnElement[Any]], postgres: bool) -> Select[Any]:
        if ranked:
            columns = [*columns, sort_expression("relevance", postgres).label("rank")]
        statement = _owned_tasks(columns)
        conditions: list[ColumnElement[bool]] = []
        if shape.completed:
            conditions.append(tasks.c.completed == bindparam("completed"))
        if shape.priority:
            conditions.append(tasks.c.priority == bindparam("priority"))
        if shape.list == "list":
            conditions.append(tasks.c.list_id == bindparam("list_id"))
        elif shape.list == "inbox":
            conditions.append(tasks.c.list_id.is_(None))
        due = tasks.c.due_date
        if shape.due_after:
            conditions.append(due >= bindparam("due_after", type_=due.type))
        if shape.due_before:
            conditions.append(due < bindparam("due_before", type_=due.type))
        now = bindparam("now", type_=due.type)
        if shape.overdue is True:
            conditions += [due < now, tasks.c.completed == false()]
        elif shape.overdue is False:
            conditions.append(or_(due.is_(None), due >= now, tasks.c.completed == true()))
        if shape.has_due is not None:
            conditions.append(due.is_not(None) if shape.has_due else due.is_(None))
        done = tasks.c.completed_at
        if shape.completed_after:
            conditions.append(done >= bindparam("completed_after", type_=done.type))
        if shape.completed_before:
            conditions.append(done < bindparam("completed_before", type_=done.type))
        if shape.search:
            conditions.append(search_match(postgres))
        if postgres and shape.labels and not shape.sort:
            return _labelled_in_id_order(shape, columns, conditions)
        conditions += [has_label(index) for index in range(shape.labels)]
        if shape.after is not None:
            conditions.append(_after_position(shape, postgres))
        order: list[ColumnElement[Any]] = [
            (
                sort_expression(field, postgres).desc()
                if descending
                else sort_expression(field, postgres).asc()
            ).nulls_last()
            for field, descending in shape.sort
        ]
        if shape.list is not None:
            # Constant within the page; it lets PostgreSQL read the inbox in the order of
            # `(user_id, list_id, id)` (`IS NULL` is no equality to its planner).
            order.insert(0, tasks.c.list_id)
        statement = statement.where(*conditions)
        return statement.order_by(*order, tasks.c.id).limit(bindparam("page_size"))

    sqlite, postgres = build(TASK_COLUMNS, False), build(RENDERED, True)
    if ranked:
        return Query.shaped(sqlite, ranked_from_columns, postgres, ranked_from_record)
    return Query.shaped(sqlite, rendered_from_columns, postgres, rendered_from_record)


def _labelled_in_id_order(
    shape: PageShape, columns: Sequence[ColumnElement[Any]], conditions: list[ColumnElement[bool]]
) -> Select[Any]:
    """PostgreSQL, a label's tasks in id order: the owner's rows of the first label in the
    label index's order, each task looked up (with the other filters) by `(user_id, id)`.
    As a semi-join (`has_label`), the planner merge-joins the label index with the primary
    key, which it reads in id order filtering out every other user's rows; the task as a
    `LATERAL` subquery (its `LIMIT 1` keeps it one: an id names one task) makes the join a
    nested loop driven by the label index, reading the owner's rows only."""
    labelled = task_labels.alias("labelled")
    task = (
        select(*columns)
        .where(OWNED, tasks.c.id == labelled.c.task_id, *conditions)
        .where(*[has_label(index) for index in range(1, shape.labels)])
        .limit(1)
        .lateral("task")
    )
    position = [labelled.c.user_id == bindparam("owner_id")]
    position.append(labelled.c.name_key == bindparam("label_0"))
    if shape.after is not None:
        position.append(labelled.c.task_id > bindparam("after_id"))
    return (
        select(*task.c)
        .select_from(labelled)
        .join(task, true())
        .where(*position)
        .order_by(labelled.c.task_id)
        .limit(bindparam("page_size"))
    )


def ranked_from_columns(row: Row) -> RankedTask:
    """A task row of columns (SQLite) with its rank, rendered."""
    rank = row.pop("rank")
    task = rendered_from_columns(row)
    return RankedTask(task.id, task.version, task.json, rank)


@cache
def update_statement(fields: frozenset[str], if_versions: int = 0) -> Query[RenderedTask]:
    """UPDATE .. RETURNING of the owner's task, setting exactly `fields`, when its version is
    one of `if_versions` bound versions (0: whatever its version)."""

    def build(columns: Sequence[ColumnElement[Any]], postgres: bool) -> Executable:
        change = _next_change() if postgres else None
        values: dict[str, Any] = {n: bindparam(f"new_{n}") for n in UPDATABLE if n in fields}
        values["version"] = tasks.c.version + 1
        values["change_seq"] = _change_number(postgres, change)
        if "completed" in fields:  # set when it becomes completed, cleared when reopened
            values["completed_at"] = case(
                (
                    bindparam("new_completed"),
                    func.coalesce(tasks.c.completed_at, bindparam("new_updated_at")),
                ),
                else_=null(),
            )
        statement = update(tasks).where(OWNED, THIS_TASK, _expected_versions(if_versions))
        if change is not None:
            statement = statement.where(_changes_first(change)).add_cte(change)
        return statement.values(**values).returning(*columns)

    return _task_query(build)


@cache
def delete_statement(if_versions: int = 0) -> Query[Row]:
    """DELETE of the owner's task (when its version is one of `if_versions` bound versions),
    leaving a tombstone with the next change number; returns the deleted id."""
    return _delete((OWNED, THIS_TASK, _expected_versions(if_versions)))


def _delete(condition: tuple[ColumnElement[bool], ...]) -> Query[Row]:
    """DELETE of the owner's tasks matching `condition`, each leaving a tombstone with the
    owner's next change number (one number for the statement; ids break the tie)."""
    sqlite = delete(tasks).where(*condition).returning(tasks.c.id)  # the trigger: tombstone
    change = _next_change()
    gone = (
        delete(tasks)
        .where(*condition, _changes_first(change))
        .returning(tasks.c.user_id, tasks.c.id, tasks.c.version)
        .cte("gone")
    )
    tombstone = (
        insert(task_tombstones)
        .from_select(
            ["user_id", "task_id", "version", "change_seq", "deleted_at"],
            select(
                gone.c.user_id,
                gone.c.id,
                gone.c.version + 1,
                change.c.change_seq,
                func.now(),
            ).select_from(gone.join(change, true())),
        )
        .returning(task_tombstones.c.task_id.label("id"))
        .add_cte(change)
        .add_cte(gone)
    )
    return Query.of(sqlite, postgres=tombstone)


IN_LIST = tasks.c.list_id == bindparam("list_id")
DELETE_LIST_TASKS = _delete((OWNED, IN_LIST))
"""The owner's tasks in list `:list_id`, deleted with their tombstones (for the feed)."""


def _move(postgres: bool) -> Executable:
    change = _next_change() if postgres else None
    statement = (
        update(tasks)
        .where(OWNED, IN_LIST)
        .values(
            list_id=bindparam("target_id"),
            updated_at=bindparam("now"),
            version=tasks.c.version + 1,
            change_seq=_change_number(postgres, change),
        )
        .returning(tasks.c.id)
    )
    if change is not None:
        statement = statement.where(_changes_first(change)).add_cte(change)
    return statement


MOVE_LIST_TASKS: Query[Row] = Query.of(_move(False), postgres=_move(True))
"""The owner's tasks in list `:list_id` moved to `:target_id` (None: the inbox), each a
change of the feed (a new version and change number)."""


# ---- labels -------------------------------------------------------------------------------

CLEAR_LABELS: Query[Row] = Query.of(
    delete(task_labels)
    .where(
        task_labels.c.user_id == bindparam("owner_id"),
        task_labels.c.task_id == bindparam("task_id"),
    )
    .returning(task_labels.c.task_id)
)
"""The owner's task's labels, removed (before they are set anew)."""
_SQLITE_SET_LABELS = text(
    "INSERT INTO task_labels (task_id, name_key, user_id, name, position)"
    " SELECT :task_id, json_extract(value, '$[0]'), :owner_id, json_extract(value, '$[1]'),"
    " CAST(key AS INTEGER) FROM json_each(:labels) RETURNING task_id"
)
_POSTGRES_SET_LABELS = text(
    "INSERT INTO task_labels (task_id, name_key, user_id, name, position)"
    " SELECT :task_id, label ->> 0, :owner_id, label ->> 1, ordinal - 1"
    " FROM jsonb_array_elements(CAST(:labels AS jsonb)) WITH ORDINALITY AS l(label, ordinal)"
    " RETURNING task_id"
).bindparams(
    bindparam("task_id", type_=BigInteger()),
    bindparam("owner_id", type_=String()),
    bindparam("labels", type_=String()),
)
SET_LABELS: Query[Row] = Query.of(_SQLITE_SET_LABELS, postgres=_POSTGRES_SET_LABELS)
"""A task's labels (`:labels`, a JSON array of `[name_key, name]`), in their order."""

OWNED_LABELS = task_labels.c.user_id == bindparam("owner_id")
THIS_LABEL = task_labels.c.name_key == bindparam("name_key")


def _touch_labelled(postgres: bool) -> Executable:
    """Every owner's task carrying label `:name_key` changed (a new version and change
    number, for the feed), before the label is renamed or removed; returns their ids."""
    change = _next_change() if postgres else None
    labelled = select(task_labels.c.task_id).where(OWNED_LABELS, THIS_LABEL)
    statement = (
        update(tasks)
        .where(OWNED, tasks.c.id.in_(labelled))
        .values(
            updated_at=bindparam("now"),
            version=tasks.c.version + 1,
            change_seq=_change_number(postgres, change),
        )
        .returning(tasks.c.id)
    )
    if change is not None:
        statement = statement.where(_changes_first(change)).add_cte(change)
    return statement


TOUCH_LABELLED: Query[Row] = Query.of(_touch_labelled(False), postgres=_touch_labelled(True))
LABEL_COUNTS: Query[Row] = Query.of(
    select(func.min(task_labels.c.name).label("name"), func.count().label("tasks"))
    .where(OWNED_LABELS)
    .group_by(task_labels.c.name_key)
    .order_by(task_labels.c.name_key)
)
_ALSO_NEW = select(task_labels.c.task_id).where(
    OWNED_LABELS, task_labels.c.name_key == bindparam("new_key")
)
DROP_MERGED: Query[Row] = Query.of(
    delete(task_labels)
    .where(OWNED_LABELS, THIS_LABEL, task_labels.c.task_id.in_(_ALSO_NEW.scalar_subquery()))
    .returning(task_labels.c.task_id)
)
"""Renaming onto a label a task already carries: the task keeps one of them."""
RENAME_LABEL: Query[Row] = Query.of(
    update(task_labels)
    .where(OWNED_LABELS, THIS_LABEL)
    .values(name=bindparam("new_name"), name_key=bindparam("new_key"))
    .returning(task_labels.c.task_id)
)
REMOVE_LABEL: Query[Row] = Query.of(
    delete(task_labels).where(OWNED_LABELS, THIS_LABEL).returning(task_labels.c.task_id)
)


def has_label(index: int) -> ColumnElement[bool]:
    """The task carries the owner's label `:label_<index>` (a name_key): one index probe."""
    return exists(
        select(task_labels.c.task_id).where(
            OWNED_LABELS,
            task_labels.c.name_key == bindparam(f"label_{index}"),
            task_labels.c.task_id == tasks.c.id,
        )
    )


# ---- the change feed ----------------------------------------------------------------------


def _feed(after: bool, tombstones: bool, postgres: bool) -> Select[Any]:
    """The owner's tasks (and tombstones) after a position `(change_seq, id)`, in order."""
    position = (tasks.c.change_seq, tasks.c.id)
    if postgres:
        task_columns: list[ColumnElement[Any]] = [
            tasks.c.change_seq.label("change_seq"),
            tasks.c.id.label("id"),
            false().label("deleted"),
            TASK_JSON_SQL,
        ]
    else:
        task_columns = [
            tasks.c.change_seq.label("change_seq"),
            tasks.c.id.label("id"),
            false().label("deleted"),
            *[column for column in COLUMNS if column.name != "id"],
            LABELS,
        ]
    live = select(*task_columns).where(OWNED)
    if after:
        live = live.where(_after(*position))
    if not tombstones:
        return live.order_by(tasks.c.change_seq, tasks.c.id).limit(bindparam("page_size"))
    dead_columns: list[ColumnElement[Any]] = [
        task_tombstones.c.change_seq.label("change_seq"),
        task_tombstones.c.task_id.label("id"),
        true().label("deleted"),
    ]
    if postgres:
        document = (
            'convert_to(\'{"id":\' || task_tombstones.task_id::text || \',"deleted":true,'
            "\"version\":' || task_tombstones.version::text || '}', 'UTF8')"
        )
        dead_columns.append(literal_column(document).label("json"))
    else:
        dead_columns += [  # `live`'s columns in its order, where `version` comes last
            literal_column("NULL").label(column.name)
            for column in COLUMNS
            if column.name not in ("id", "version")
        ]
        dead_columns.append(task_tombstones.c.version.label("version"))
        dead_columns.append(literal_column("NULL").label("labels"))
    dead = select(*dead_columns).where(task_tombstones.c.user_id == bindparam("owner_id"))
    if after:
        dead = dead.where(_after(task_tombstones.c.change_seq, task_tombstones.c.task_id))
    both = union_all(live, dead).subquery("changes")
    return select(both).order_by(both.c.change_seq, both.c.id).limit(bindparam("page_size"))


def _after(seq: ColumnElement[Any], row_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """`(seq, id) > (:after_seq, :after_id)`, written so both backends use the index."""
    return (seq > bindparam("after_seq")) | (
        (seq == bindparam("after_seq")) & (row_id > bindparam("after_id"))
    )


class Change(NamedTuple):
    """A change of the feed: its position, whether it is a deletion, and its JSON."""

    change_seq: int
    id: int
    json: bytes


def _change_from_columns(row: Row) -> Change:
    if row["deleted"]:
        document = b'{"id":%d,"deleted":true,"version":%d}' % (row["id"], row["version"])
        return Change(row["change_seq"], row["id"], document)
    task = {name: row[name] for name in TASK_FIELDS}
    return Change(row["change_seq"], row["id"], rendered_from_columns(task).json)


def _change_from_record(record: Any) -> Change:
    change_seq, task_id, _, document = record
    return Change(change_seq, task_id, document)


@cache
def feed_statement(after: bool, tombstones: bool) -> Query[Change]:
    """The feed's page query: tasks (and, after a position, tombstones) in change order."""
    return Query.shaped(
        _feed(after, tombstones, False),
        _change_from_columns,
        _feed(after, tombstones, True),
        _change_from_record,
    )


# ---- idempotency keys ---------------------------------------------------------------------

_THIS_KEY = (
    idempotency_keys.c.user_id == bindparam("owner_id"),
    idempotency_keys.c.key == bindparam("key"),
)
GET_KEY: Query[Row] = Query.of(
    select(
        idempotency_keys.c.request_hash,
        idempotency_keys.c.status,
        idempotency_keys.c.task_id,
        idempotency_keys.c.body,
        idempotency_keys.c.created_at,
    ).where(*_THIS_KEY)
)
DELETE_KEY: Query[Row] = Query.of(
    delete(idempotency_keys).where(*_THIS_KEY).returning(idempotency_keys.c.key)
)
STORE_KEY: Query[Row] = Query.of(
    insert(idempotency_keys)
    .values(
        {
            name: bindparam(name if name != "user_id" else "owner_id")
            for name in (
                "user_id",
                "key",
                "request_hash",
                "status",
                "task_id",
                "body",
                "created_at",
            )
        }
    )
    .returning(idempotency_keys.c.key)
)

# ---- purging what has expired -------------------------------------------------------------

PURGE_BATCH = 1000


def _purge(table: Table, age: ColumnElement[Any], key: Sequence[ColumnElement[Any]]) -> Query[Row]:
    """Delete up to PURGE_BATCH rows older than `:cutoff`; returns a column of each."""
    expired = select(*key).where(age < bindparam("cutoff")).limit(PURGE_BATCH)
    return Query.of(delete(table).where(tuple_(*key).in_(expired)).returning(key[0]))


PURGE_TOMBSTONES = _purge(
    task_tombstones,
    task_tombstones.c.deleted_at,
    (task_tombstones.c.user_id, task_tombstones.c.task_id),
)
PURGE_KEYS = _purge(
    idempotency_keys,
    idempotency_keys.c.created_at,
    (idempotency_keys.c.user_id, idempotency_keys.c.key),
)
