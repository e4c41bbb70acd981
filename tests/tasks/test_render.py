"""The fast path's JSON is byte for byte the routes' response model's (`TaskRead`): as
orjson renders rows (SQLite), and as PostgreSQL renders them in the task queries."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from taskapi.db import Query
from taskapi.tasks import queries as service
from taskapi.tasks.queries import rendered_from_record
from taskapi.tasks.render import page_json, rendered_from_columns, task_json
from taskapi.tasks.schemas import TaskRead

TASK = TypeAdapter(TaskRead)
TASKS = TypeAdapter(list[TaskRead])

# Anything a column can hold: text PostgreSQL stores (no NUL, valid UTF-8), timestamps over
# the whole range, UTC-aware as drivers return them or naive (taken as UTC).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
MOMENTS = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
)
AWARE = MOMENTS.map(lambda moment: moment.replace(tzinfo=dt.UTC))  # what the service stores
TIMESTAMPS = AWARE | MOMENTS
FIELDS = tuple(TaskRead.model_fields)
COLUMNS = FIELDS[:-1]  # the task's columns; `labels` are rows of task_labels


def task_rows(timestamps: st.SearchStrategy[dt.datetime]) -> st.SearchStrategy[dict[str, Any]]:
    """Task rows, their columns in the model's field order as the queries select them."""
    return st.fixed_dictionaries(
        {
            "id": st.integers(1, 2**63 - 1),
            "title": TEXT,
            "description": st.none() | TEXT,
            "completed": st.booleans(),
            "priority": st.none() | st.sampled_from(["low", "medium", "high"]),
            "due_date": st.none() | timestamps,
            "list_id": st.none() | st.integers(1, 2**63 - 1),
            "user_id": TEXT,
            "created_at": timestamps,
            "updated_at": timestamps,
            "completed_at": st.none() | timestamps,
            "version": st.integers(1, 2**63 - 1),
            "labels": st.lists(
                st.text(
                    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20
                ),
                max_size=3,
                unique_by=str.lower,
            ),
        }
    ).map(lambda row: {name: row[name] for name in FIELDS})


ROWS = task_rows(TIMESTAMPS)


def test_rows_come_in_the_models_field_order() -> None:
    """What the byte-for-byte equality rests on: every task query selects these columns."""
    assert (*(column.name for column in service.COLUMNS), "labels") == FIELDS


@settings(max_examples=500, deadline=None)
@given(row=ROWS)
def test_a_task_serializes_as_the_response_model_does(row: dict[str, Any]) -> None:
    assert task_json(row) == TASK.dump_json(TASK.validate_python(row))


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(ROWS, max_size=5))
def test_a_page_serializes_as_the_response_model_does(rows: list[dict[str, Any]]) -> None:
    rendered = [rendered_from_columns(row) for row in rows]  # as SQLite's rows are rendered
    assert page_json(rendered) == TASKS.dump_json(TASKS.validate_python(rows))


def test_the_edges_of_the_range_and_zero_microseconds() -> None:
    for moment in (
        dt.datetime(1, 1, 1),
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2026, 2, 10, tzinfo=dt.UTC),
    ):
        row = {
            "id": 1,
            "title": "t",
            "description": None,
            "completed": True,
            "priority": None,
            "due_date": moment,
            "list_id": None,
            "user_id": "u",
            "created_at": moment,
            "updated_at": moment,
            "completed_at": moment,
            "version": 1,
            "labels": ["a", "B"],
        }
        assert task_json(row) == TASK.dump_json(TASK.validate_python(row))


# ---- PostgreSQL's rendering, through the service's own rendered queries -------------------

PG_ROWS = task_rows(AWARE)
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)  # asyncpg stores it as -infinity
LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)  # and this as infinity
EDGE = {
    "id": 2**63 - 1,
    "title": '"\\\b\f\n\r\t\x01\x1f\x7f é \u2028 😀 </script>',
    "description": "",
    "completed": False,
    "priority": "low",
    "due_date": EARLIEST,
    "list_id": None,
    "user_id": "ü\x02",
    "created_at": LATEST,
    "updated_at": dt.datetime(2026, 2, 10, 0, 0, 0, 10, tzinfo=dt.UTC),
    "completed_at": LATEST,
    "version": 2**63 - 1,
    "labels": ['"\\\b\f\n\r\t\x01\x1f\x7f', "é \u2028 😀"],
}


class Postgres:
    """One connection to the test database, driven from synchronous (Hypothesis) tests."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.connection: Any = self.loop.run_until_complete(asyncpg.connect(url))

    def rendered(self, query: Query, params: dict[str, Any], rows: list[dict[str, Any]]) -> Any:
        """`query`'s rendered rows, with `rows` in the tasks table (rolled back after)."""
        return self.loop.run_until_complete(self._rendered(query, params, rows))

    async def _rendered(
        self, query: Query, params: dict[str, Any], rows: list[dict[str, Any]]
    ) -> Any:
        transaction = self.connection.transaction()
        await transaction.start()
        try:
            for row in rows:
                await self.connection.execute(
                    "INSERT INTO users (id, created_at, updated_at) VALUES ($1, now(), now())"
                    " ON CONFLICT DO NOTHING",
                    row["user_id"],
                )
                if row["list_id"] is not None:  # the task's list, of its owner
                    await self.connection.execute(
                        "INSERT INTO lists (id, user_id, name, created_at, updated_at)"
                        " VALUES ($1, $2, 'l', now(), now()) ON CONFLICT DO NOTHING",
                        row["list_id"],
                        row["user_id"],
                    )
                await self.connection.execute(
                    f"INSERT INTO tasks ({', '.join(COLUMNS)})"
                    f" VALUES ({', '.join(f'${n}' for n in range(1, len(COLUMNS) + 1))})",
                    *[row[name] for name in COLUMNS],
                )
                for position, label in enumerate(row["labels"]):
                    await self.connection.execute(
                        "INSERT INTO task_labels (task_id, name_key, user_id, name, position)"
                        " VALUES ($1, $2, $3, $4, $5)",
                        row["id"],
                        label.lower(),
                        row["user_id"],
                        label,
                        position,
                    )
            records = await self.connection.fetch(query.sql, *query.arguments(params))
            return [query.from_record(record) for record in records]
        finally:
            await transaction.rollback()

    def close(self) -> None:
        self.loop.run_until_complete(self.connection.close())
        self.loop.close()


@pytest.fixture(scope="module")
def postgres(pg_url: str) -> Iterator[Postgres]:
    database = Postgres(pg_url)
    yield database
    database.close()


@settings(max_examples=300, deadline=None)
@given(row=PG_ROWS)
@example(row=EDGE)
@example(row={**EDGE, "due_date": LATEST, "created_at": EARLIEST, "description": None})
def test_postgresql_renders_a_task_as_the_response_model_does(
    postgres: Postgres, row: dict[str, Any]
) -> None:
    params = {"owner_id": row["user_id"], "task_id": row["id"]}
    [rendered] = postgres.rendered(service.GET_TASK, params, [row])
    assert rendered.id == row["id"]
    assert rendered.json == TASK.dump_json(TASK.validate_python(row))


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(PG_ROWS, max_size=5, unique_by=lambda row: row["id"]))
def test_postgresql_renders_a_page_as_the_response_model_does(
    postgres: Postgres, rows: list[dict[str, Any]]
) -> None:
    owned = [{**row, "user_id": "owner"} for row in rows]
    params = {"owner_id": "owner", "page_size": 10}
    rendered = postgres.rendered(service.list_statement(False, False, False), params, owned)
    in_order = sorted(owned, key=lambda row: row["id"])
    assert page_json(rendered) == TASKS.dump_json(TASKS.validate_python(in_order))


def test_every_task_query_returns_rendered_tasks_on_both_backends() -> None:
    """Both backends return the columns (PostgreSQL the labels as an array, SQLite as JSON),
    rendered by orjson: PostgreSQL rendering the document costs it more than orjson costs
    the worker."""
    queries = [
        service.GET_TASK,
        service.CREATE_TASK,
        service.update_statement(frozenset({"title"})),
    ]
    queries += [service.list_statement(*flags) for flags in [(True, True, True), (False,) * 3]]
    for query in queries:
        assert query.from_columns is rendered_from_columns
        assert query.from_record is rendered_from_record
        assert "convert_to(" not in query.sql
        assert "array_agg(task_labels.name ORDER BY task_labels.position)" in query.sql
        assert "convert_to(" not in str(query.statement)
