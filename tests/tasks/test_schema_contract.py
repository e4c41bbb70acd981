"""The OpenAPI schema says what the service accepts: no schema-valid request is refused.

Two values schemathesis found the schema promised and the service refused: a `cursor` of 64
zeros (the schema said "any string up to 64 characters") and a `due_date` out of range once
converted to UTC (`0001-01-01T00:00:05+01:00`). The schema now states the cursor's format (a
`pattern` matching exactly the cursors the service issues, which are exactly the ones it takes)
and the dates' range (a `pattern` the `due_date` validator enforces to the letter). These
tests read both patterns from the served `/openapi.json`, as a client would.

Sorted or filtered task pages (issue 13) page with keyset cursors, which hold the last task's
sort values and are bound to the sort and filters: the list's pattern is the id cursors'
exact pattern or a keyset cursor's form, and a cursor of that form that was not issued for
the request's sort and filters is a 422 naming `query.cursor` (declared, and allowed so in
tests/fuzz). The lists' cursor (`/api/v1/lists`) is an id cursor: its pattern is exact.
"""

from __future__ import annotations

import base64
import functools
import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from taskapi.app import create_app
from taskapi.tasks.contract import (
    MAX_KEYSET_CURSOR_LENGTH,
    MAX_TASK_ID,
    SORT_FIELDS,
    Cursor,
    InvalidCursorError,
    KeysetCursor,
    TaskFilter,
    parse_sort,
)
from taskapi.tasks.schemas import TaskCreate, TaskUpdate
from tests.conftest import make_settings
from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
LISTS = "/api/v1/lists"
ALICE = auth("alice")
SCHEMA = create_app(make_settings("sqlite:///:memory:")).openapi()


def _cursor_schema(path: str = LISTS) -> dict[str, Any]:
    (parameter,) = [p for p in SCHEMA["paths"][path]["get"]["parameters"] if p["name"] == "cursor"]
    return dict(parameter["schema"])


def _due_date_schemas() -> list[dict[str, Any]]:
    found = []
    for model in ("TaskCreate", "TaskUpdate"):
        due_date = SCHEMA["components"]["schemas"][model]["properties"]["due_date"]
        found += [branch for branch in due_date["anyOf"] if branch.get("type") == "string"]
    return found


def cursor_pattern(path: str = LISTS) -> str:
    """A cursor's pattern, at the parameter schema's top or in its string branch: by default
    the id cursor's (the lists'), exact."""
    schema = _cursor_schema(path)
    branches = [schema, *schema.get("anyOf", [])]
    patterns = [branch["pattern"] for branch in branches if "pattern" in branch]
    assert len(patterns) == 1, schema
    return str(patterns[0])


def due_date_pattern() -> str:
    patterns = {branch.get("pattern") for branch in _due_date_schemas()}
    assert len(patterns) == 1, _due_date_schemas()
    (pattern,) = patterns
    assert isinstance(pattern, str), _due_date_schemas()
    return pattern


@functools.cache
def _validator(pattern: str) -> Any:
    return jsonschema_rs.validator_for({"type": "string", "pattern": pattern})


def allows(pattern: str, value: str) -> bool:
    """Whether JSON Schema's `pattern` (ECMA 262, as schemathesis judges it) admits `value`."""
    return bool(_validator(pattern).is_valid(value))


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decodes(cursor: str) -> bool:
    try:
        Cursor.decode(cursor)
    except InvalidCursorError:
        return False
    return True


# --- the cursor ----------------------------------------------------------------------------

ISSUED_IDS = [
    *range(0, 1200),
    *(10**k + d for k in range(1, 19) for d in (-1, 0, 1)),
    *range(MAX_TASK_ID - 1000, MAX_TASK_ID + 1),
    9_199_999_999_999_999_999,
    9_223_372_036_854_775_799,
    9_223_372_036_854_775_800,
]
# What the decoder used to take besides the cursors it issues (int() and base64's leniency),
# the 64 zeros schemathesis sent, and ids beyond the range.
REFUSED_CURSORS = {
    "64-zeros": "0" * 64,
    "leading-zero": _b64("id:01"),
    "plus-sign": _b64("id:+1"),
    "minus-zero": _b64("id:-0"),
    "space": _b64("id: 1"),
    "underscore": _b64("id:1_0"),
    "arabic-indic-digit": _b64("id:\u0663"),
    "padded": Cursor.encode(1) + "==",
    "junk-inside": Cursor.encode(1)[:3] + "!" + Cursor.encode(1)[3:],
    "trailing-newline": Cursor.encode(1) + "\n",
    "other-prefix": _b64("ID:1"),
    "no-number": _b64("id:"),
    "max-plus-one": Cursor.encode(MAX_TASK_ID + 1),
    "twenty-digits": Cursor.encode(10**19),
    "empty": "",
}


def test_the_cursor_schema_has_an_anchored_pattern_within_its_length() -> None:
    assert re.fullmatch(r"\^.*\$", cursor_pattern()), "anchored"
    assert _cursor_schema()["anyOf"][0]["maxLength"] >= len(Cursor.encode(MAX_TASK_ID))


def test_the_task_lists_cursor_is_an_id_cursor_or_a_keyset_cursors_form() -> None:
    assert cursor_pattern(TASKS) == (
        f"^(?:{cursor_pattern()[1:-1]}|WyJrMSIs[A-Za-z0-9_-]{{1,{MAX_KEYSET_CURSOR_LENGTH - 8}}})$"
    )
    assert _cursor_schema(TASKS)["anyOf"][0]["maxLength"] == MAX_KEYSET_CURSOR_LENGTH


def _page(**fields: Any) -> TaskFilter:
    return TaskFilter(**fields)


KEYSET_CURSORS = [
    KeysetCursor((), 0, _page(has_due=True).digest()),
    KeysetCursor((None,), MAX_TASK_ID, _page(sort=parse_sort("due_date")).digest()),
    KeysetCursor((-0.607927,), 7, _page(search=("a",), sort=parse_sort("relevance")).digest()),
    # The longest: every key, a title of 200 characters JSON escapes to 6 bytes each.
    KeysetCursor(
        (
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            3,
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 1, 1, tzinfo=UTC),
            "\x01" * 200,
            -1.2345678901234567e-300,
        ),
        MAX_TASK_ID,
        _page(search=("a",), sort=parse_sort(",".join(SORT_FIELDS))).digest(),
    ),
]


@pytest.mark.parametrize("keyset", KEYSET_CURSORS)
def test_every_issued_keyset_cursor_matches_the_task_lists_pattern(keyset: KeysetCursor) -> None:
    cursor = keyset.encode()
    assert len(cursor) <= MAX_KEYSET_CURSOR_LENGTH
    assert allows(cursor_pattern(TASKS), cursor), cursor
    assert not decodes(cursor)  # not an id cursor: the plain list refuses it


def test_every_issued_cursor_matches() -> None:
    """Every id up to 1200, around each power of ten, and the last thousand of the range."""
    for last_id in ISSUED_IDS:
        cursor = Cursor.encode(last_id)
        assert allows(cursor_pattern(), cursor), (last_id, cursor)
        assert allows(cursor_pattern(TASKS), cursor), (last_id, cursor)
        assert Cursor.decode(cursor) == last_id


@pytest.mark.parametrize("cursor", list(REFUSED_CURSORS.values()), ids=list(REFUSED_CURSORS))
def test_cursors_outside_the_pattern_are_refused(cursor: str) -> None:
    assert not allows(cursor_pattern(), cursor)
    assert not allows(cursor_pattern(TASKS), cursor)
    assert not decodes(cursor)


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=MAX_TASK_ID))
def test_cursors_of_any_id_match(last_id: int) -> None:
    assert allows(cursor_pattern(), Cursor.encode(last_id))


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=MAX_TASK_ID + 1, max_value=10**30) | st.integers(max_value=-1))
def test_cursors_of_ids_out_of_range_do_not_match(last_id: int) -> None:
    assert not allows(cursor_pattern(), Cursor.encode(last_id))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_what_the_pattern_allows_is_exactly_what_decodes(data: st.DataObject) -> None:
    """Strings drawn from the pattern decode (and are the cursor of what they decode to);
    strings of the cursor alphabet decode only if they match."""
    drawn = data.draw(st.from_regex(cursor_pattern(), fullmatch=True))
    assert Cursor.encode(Cursor.decode(drawn)) == drawn
    alphabet = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    near = data.draw(
        st.lists(alphabet, max_size=32).map("".join).map(lambda s: "aWQ6" + s)
        | st.text(max_size=40)
    )
    assert bool(allows(cursor_pattern(), near)) == decodes(near), near


class TestOverHTTP:
    """Both ways in (the fast path, and FastAPI) refuse what the pattern excludes."""

    @pytest.fixture
    def backend(self) -> str:
        return "sqlite"  # the cursor is checked before any query

    @pytest.fixture(params=[True, False], ids=["fast-path", "fastapi"])
    def settings_overrides(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        return {"tasks_fast_path": request.param}

    @pytest.mark.parametrize(
        "cursor",
        [c for c in REFUSED_CURSORS.values() if c],
        ids=[k for k, c in REFUSED_CURSORS.items() if c],
    )
    async def test_refused_cursor_is_422(self, client: httpx.AsyncClient, cursor: str) -> None:
        response = await client.get(TASKS, params={"cursor": cursor}, headers=ALICE)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "VALIDATION_ERROR"
        assert "cursor" in response.json()["detail"]

    async def test_issued_cursors_are_taken(self, client: httpx.AsyncClient) -> None:
        for last_id in (0, 1, 10**18, MAX_TASK_ID):
            response = await client.get(
                TASKS, params={"cursor": Cursor.encode(last_id)}, headers=ALICE
            )
            assert response.status_code == 200, response.text


# --- due_date ------------------------------------------------------------------------------


def accepted(value: str) -> bool:
    """Whether both request models take `value` as a due_date."""
    results = set()
    for model, body in ((TaskCreate, {"title": "x"}), (TaskUpdate, {})):
        try:
            model.model_validate({**body, "due_date": value})
        except ValidationError:
            results.add(False)
        else:
            results.add(True)
    assert len(results) == 1
    return results.pop()


DUE_DATES = {
    # schemathesis's find: 0001-01-01T00:00:05+01:00 is 0000-12-31T23:00:05Z.
    "year-0-in-utc": ("0001-01-01T00:00:05+01:00", False),
    "year-10000-in-utc": ("9999-12-31T23:30:00-01:00", False),
    "first-day-ahead-of-utc": ("0001-01-01T05:00:00+01:00", False),
    "last-day-behind-utc": ("9999-12-31T00:00:00-01:00", False),
    "first-instant": ("0001-01-01T00:00:00Z", True),
    "first-day-plus-zero": ("0001-01-01T00:00:00+00:00", True),
    "first-day-behind-utc": ("0001-01-01T00:00:00-05:00", True),
    "second-day-ahead-of-utc": ("0001-01-02T00:00:00+23:59", True),
    "last-instant": ("9999-12-31T23:59:59.999999Z", True),
    "last-day-minus-zero": ("9999-12-31T23:59:59-00:00", True),
    "last-day-ahead-of-utc": ("9999-12-31T23:59:59+05:00", True),
    "day-before-last-behind-utc": ("9999-12-30T23:59:59-23:59", True),
    "ordinary": ("2026-02-10T00:00:00Z", True),
    "ordinary-offset": ("2026-02-10T09:30:00+05:30", True),
}


@pytest.mark.parametrize(("value", "expected"), list(DUE_DATES.values()), ids=list(DUE_DATES))
def test_due_dates_are_taken_exactly_when_the_schema_allows_them(
    value: str, expected: bool
) -> None:
    assert accepted(value) is expected
    assert bool(allows(due_date_pattern(), value)) is expected


ZONES: st.SearchStrategy[Any] = (
    st.none()
    | st.just(UTC)
    | st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    )
)
EDGE_DAYS = st.sampled_from([date(1, 1, 1), date(1, 1, 2), date(9999, 12, 30), date(9999, 12, 31)])


@settings(max_examples=1000, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
        timezones=ZONES,
    )
    | st.builds(datetime.combine, EDGE_DAYS, st.times(), ZONES)
)
def test_any_date_time_is_taken_exactly_when_the_schema_allows_it(value: datetime) -> None:
    text = value.isoformat()
    assert accepted(text) == bool(allows(due_date_pattern(), text)), text
