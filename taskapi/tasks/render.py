"""Task rows as the JSON the routes' response model (`TaskRead`) produces, byte for byte.

Every task query returns `RenderedTask` rows (`taskapi.tasks.queries`), on either backend:

- `task_json`: orjson, for the columns either backend returns (`rendered_from_columns` for
  SQLite's rows, `taskapi.tasks.queries.rendered_from_record` for PostgreSQL's records);
- `task_json_sql`: PostgreSQL builds the document in its SQL, for the change feed (its
  pages mix tasks and tombstones). Why the others render in the worker: docs/design.md,
  "The fast path".

Both are property-tested against `TaskRead` (tests/tasks/test_render.py).

What the byte-for-byte equality rests on:
- keys in the model's field order, no spaces (the columns are selected in that order);
- strings escaped as pydantic-core escapes them: `\\"`, `\\\\`, `\\b \\f \\n \\r \\t`, other
  control characters as lowercase `\\u00XX`, everything else (non-ASCII, DEL) as is: what
  PostgreSQL's `to_json(text)` does too;
- timestamps in UTC as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, the fraction only when non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import orjson
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    TypeDecorator,
    literal_column,
)
from sqlalchemy.sql.elements import ColumnElement

from taskapi.db import Row

_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


class RenderedTask(NamedTuple):
    """A task row as its id, its version and its JSON document."""

    id: int
    version: int
    json: bytes


class RankedTask(NamedTuple):
    """A rendered task of a page sorted by relevance, with its sort value (the negated
    rank), which its cursor holds."""

    id: int
    version: int
    json: bytes
    rank: float


def task_json(row: Row) -> bytes:
    """A task row as the routes' response model serializes it (with orjson, far cheaper than
    pydantic). Its columns come in the model's field order; timestamps are UTC (naive ones
    are taken as UTC, as `as_utc` does)."""
    return orjson.dumps(row, option=_JSON_OPTIONS)


def rendered_from_columns(row: Row) -> RenderedTask:
    """A task row of columns (SQLite), rendered here; its `labels` come as a JSON array."""
    labels = row.get("labels")
    if isinstance(labels, str | bytes):
        row["labels"] = orjson.loads(labels)
    return RenderedTask(row["id"], row["version"], task_json(row))


def page_json(rows: Sequence[RenderedTask | RankedTask]) -> bytes:
    """Rendered rows as a JSON array."""
    return b"[" + b",".join([row.json for row in rows]) + b"]"


def _timestamp(sql: str) -> str:
    """A timestamp's JSON. asyncpg stores Python's `datetime.max` and `datetime.min` as
    PostgreSQL's `infinity` and `-infinity` (and reads them back so), hence their cases."""
    moment = f"""to_char({sql} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    return (
        f"CASE WHEN {sql} = 'infinity' THEN '\"9999-12-31T23:59:59.999999Z\"'"
        f" WHEN {sql} = '-infinity' THEN '\"0001-01-01T00:00:00Z\"'"
        f""" ELSE '"' || replace({moment}, '.000000Z', 'Z') || '"' END"""
    )


def _value(column: Column[object]) -> str:
    """SQL for one column's JSON value (text)."""
    sql = f"{column.table.name}.{column.name}"
    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    if isinstance(kind, Boolean):
        value = f"CASE WHEN {sql} THEN 'true' ELSE 'false' END"
    elif isinstance(kind, Integer):
        value = f"{sql}::text"
    elif isinstance(kind, DateTime):
        value = _timestamp(sql)
    else:
        value = f"to_json({sql})::text"
    return f"coalesce({value}, 'null')" if column.nullable else value


LABELS_SQL = (
    "coalesce((SELECT '[' || string_agg(to_json(task_labels.name)::text, ','"
    " ORDER BY task_labels.position) || ']' FROM task_labels"
    " WHERE task_labels.task_id = tasks.id), '[]')"
)
"""PostgreSQL: a task's labels as a JSON array (text), in the order they were set."""


def task_json_sql(
    columns: Sequence[Column[object]], extra: Sequence[tuple[str, str]] = ()
) -> ColumnElement[bytes]:
    """PostgreSQL SQL that renders a row of `columns` (then `extra` keys with their SQL of
    JSON text) as `task_json` does, as bytes."""
    parts = []
    values = [(column.name, _value(column)) for column in columns] + list(extra)
    for index, (name, value) in enumerate(values):
        key = orjson.dumps(name).decode()
        parts.append(f"""'{"{" if index == 0 else ","}{key}:' || {value}""")
    document = " || ".join(parts) + " || '}'"
    return literal_column(f"convert_to({document}, 'UTF8')", LargeBinary).label("json")
