"""The fast path's JSON is byte for byte the routes' response model's (`TaskRead`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from taskapi.tasks import service
from taskapi.tasks.fastpath import task_json
from taskapi.tasks.schemas import TaskRead

TASK = TypeAdapter(TaskRead)
TASKS = TypeAdapter(list[TaskRead])

# Anything a column can hold: text PostgreSQL stores (no NUL, valid UTF-8), timestamps over
# the whole range, UTC-aware as drivers return them or naive (taken as UTC).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
MOMENTS = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
)
TIMESTAMPS = MOMENTS.map(lambda moment: moment.replace(tzinfo=dt.UTC)) | MOMENTS
FIELDS = tuple(TaskRead.model_fields)
ROWS = st.fixed_dictionaries(
    {
        "id": st.integers(1, 2**63 - 1),
        "title": TEXT,
        "description": st.none() | TEXT,
        "completed": st.booleans(),
        "priority": st.none() | st.sampled_from(["low", "medium", "high"]),
        "due_date": st.none() | TIMESTAMPS,
        "user_id": TEXT,
        "created_at": TIMESTAMPS,
        "updated_at": TIMESTAMPS,
    }
).map(lambda row: {name: row[name] for name in FIELDS})  # rows come in column order


def test_rows_come_in_the_models_field_order() -> None:
    """What the byte-for-byte equality rests on: every task query selects these columns."""
    assert tuple(column.name for column in service.COLUMNS) == FIELDS


@settings(max_examples=500, deadline=None)
@given(row=ROWS)
def test_a_task_serializes_as_the_response_model_does(row: dict[str, Any]) -> None:
    assert task_json(row) == TASK.dump_json(TASK.validate_python(row))


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(ROWS, max_size=5))
def test_a_page_serializes_as_the_response_model_does(rows: list[dict[str, Any]]) -> None:
    assert task_json(rows) == TASKS.dump_json(TASKS.validate_python(rows))


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
            "user_id": "u",
            "created_at": moment,
            "updated_at": moment,
        }
        assert task_json(row) == TASK.dump_json(TASK.validate_python(row))
