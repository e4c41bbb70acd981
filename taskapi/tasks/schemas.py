"""Request and response bodies of the tasks API, with every bound documented in the schema."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from taskapi.models import (
    DESCRIPTION_MAX,
    LABEL_MAX,
    LABELS_PER_TASK,
    TITLE_MAX,
    unstorable_reason,
)

MAX_LIST_ID = 2**53 - 1
"""The largest `list_id` a body may hold: the largest integer every JSON client (and JSON
Schema validator) holds exactly; above it, `2**63 - 1` and its neighbours are one double."""


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


def storable(value: str) -> str:
    """Refuse what PostgreSQL cannot store in text (`unstorable_reason`)."""
    reason = unstorable_reason(value)
    if reason is not None:
        raise ValueError(reason)
    return value


def not_blank(value: str) -> str:
    """A title of only white space is no title."""
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def as_utc(value: datetime) -> datetime:
    """Naive means UTC; aware is converted to UTC (a value outside years 1-9999 is refused)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def in_utc_range(value: datetime) -> datetime:
    """What `DUE_DATE_PATTERN` states: no offset ahead of UTC on 0001-01-01, none behind it on
    9999-12-31, where the value could leave years 1-9999 once converted to UTC."""
    offset = value.utcoffset()
    if offset is not None and (
        (value.date() == date.min and offset > timedelta(0))
        or (value.date() == date.max and offset < timedelta(0))
    ):
        raise ValueError(
            "may be out of range once converted to UTC: on 0001-01-01 use an offset that is "
            "not ahead of UTC, on 9999-12-31 one that is not behind it"
        )
    return value


_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?")


def iso_text(value: Any) -> Any:
    """Only ISO 8601 text is a date: pydantic would also read numbers as Unix times."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _NUMBER.fullmatch(value.strip()):
        raise ValueError("must be an ISO 8601 date-time string, e.g. 2026-02-10T00:00:00Z")
    return value


# What the validators above enforce, stated in the schema so clients (and fuzzers) see it:
# no NUL anywhere, and a title needs one character that `str.isspace()` does not count.
_SPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TITLE_PATTERN = f"^[^\\x00]*[^\\x00{_SPACE}][^\\x00]*$"
NO_NUL_PATTERN = "^[^\\x00]*$"
# `in_utc_range` as a pattern, beside `format: date-time`: any year but 0001 and 9999; any other
# day of those; 0001-01-01 without a positive offset (a date-time holds no "+" but its
# offset's); 9999-12-31 without a negative one (no "-" after the date but its offset's).
_YEAR_NOT_EDGE = (
    "(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
)
DUE_DATE_PATTERN = (
    f"^(?:{_YEAR_NOT_EDGE}-"
    "|0001-(?:[^0]|0[^1]|01-[^0]|01-0[^1])"
    "|9999-(?:[^1]|1[^2]|12-[^3]|12-3[^1])"
    "|0001-01-01[^+]*(?:[+]00(?::?00)?)?$"
    "|9999-12-31[^-]*(?:-00(?::?00)?)?$)"
)


def _title_schema(schema: dict[str, Any]) -> None:
    schema["pattern"] = TITLE_PATTERN


def _description_schema(schema: dict[str, Any]) -> None:
    schema["pattern"] = NO_NUL_PATTERN


def _optional_title_schema(schema: dict[str, Any]) -> None:
    """A PUT title: may be omitted but not null (so no `default: null`)."""
    schema.pop("default", None)
    schema["pattern"] = TITLE_PATTERN


def _no_default(schema: dict[str, Any]) -> None:
    """Leave `default: null` out of the schema of fields that may be omitted but not null."""
    schema.pop("default", None)


Title = Annotated[
    str,
    Field(
        min_length=1,
        max_length=TITLE_MAX,
        examples=["Complete project documentation"],
        json_schema_extra=_title_schema,
    ),
    AfterValidator(storable),
    AfterValidator(not_blank),
]
Description = Annotated[
    str,
    Field(
        max_length=DESCRIPTION_MAX,
        examples=["Write comprehensive API docs"],
        json_schema_extra=_description_schema,
    ),
    AfterValidator(storable),
]
DueDate = Annotated[
    datetime,
    Field(
        description=(
            "ISO 8601; a value without offset is taken as UTC. Its UTC value must lie in years "
            "1-9999: on 0001-01-01 the offset may not be ahead of UTC, on 9999-12-31 not behind."
        ),
        json_schema_extra={"pattern": DUE_DATE_PATTERN},
    ),
    BeforeValidator(iso_text),
    AfterValidator(in_utc_range),
    AfterValidator(as_utc),
]


def whole_number(value: object) -> object:
    """A JSON integer: `3` or `3.0` (JSON Schema's `integer` admits both), not `3.5`, `"3"`
    or `true`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


ListId = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_LIST_ID,
        strict=True,
        description="The task's list (one of the caller's); null: the inbox",
    ),
    BeforeValidator(whole_number),  # after Field, so its bounds stay the schema's own
]


def _trimmed(value: str) -> str:
    return value.strip()


LABEL_PATTERN = TITLE_PATTERN
"""A label: no NUL, and a character other than white space (so it is not empty trimmed)."""
LabelText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=LABEL_MAX, pattern=LABEL_PATTERN),
    AfterValidator(storable),
    AfterValidator(_trimmed),
]
"""A label as sent (in a body, a query or a path): 1-50 characters, as the schema says
(length and pattern checked as sent), then trimmed."""
Label = Annotated[LabelText, Field(description="1-50 characters, trimmed", examples=["errands"])]


def distinct_labels(labels: list[str]) -> list[str]:
    """A task's labels are unique without regard to case: a repeat (trimmed, in any case) is
    dropped, the first spelling kept. No schema can say "unique without regard to case", so
    a repeat is not refused."""
    kept: dict[str, str] = {}
    for label in labels:
        kept.setdefault(label.lower(), label)
    return list(kept.values())


Labels = Annotated[
    list[Label],
    Field(
        max_length=LABELS_PER_TASK,
        description=(
            "At most 20 names, unique without regard to case (a repeat is dropped, the first "
            "spelling kept), in the order sent"
        ),
    ),
    AfterValidator(distinct_labels),
]


class TaskCreate(BaseModel):
    """A new task. Read-only fields (id, user_id, timestamps) are ignored if sent."""

    model_config = ConfigDict(extra="ignore")

    title: Title
    description: Description | None = None
    completed: bool = Field(default=False, strict=True)
    priority: Priority | None = None
    due_date: DueDate | None = None
    list_id: ListId | None = None
    labels: Labels = Field(default_factory=list)


class TaskUpdate(BaseModel):
    """A partial update: only the fields sent change; `null` clears an optional field.

    `title` and `completed` may be omitted but not set to null.
    """

    model_config = ConfigDict(extra="ignore")

    title: Title = Field(default=None, json_schema_extra=_optional_title_schema)  # type: ignore[assignment]
    description: Description | None = None
    completed: bool = Field(default=None, strict=True, json_schema_extra=_no_default)  # type: ignore[assignment]
    priority: Priority | None = None
    due_date: DueDate | None = None
    list_id: ListId | None = None
    labels: Labels | None = Field(default=None, description="The task's labels; null: none")


# Drivers return UTC-aware values, except asyncpg at the very edge of the range
# (0001-01-01T00:00:00Z comes back naive), so make sure.
UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]


class TaskRead(BaseModel):
    """A task as the API returns it; timestamps are UTC with a `Z` suffix."""

    id: int
    title: str
    description: str | None
    completed: bool
    priority: Priority | None
    due_date: UTCDateTime | None
    list_id: int | None = Field(description="The task's list; null: the inbox")
    user_id: str
    created_at: UTCDateTime
    updated_at: UTCDateTime
    completed_at: UTCDateTime | None = Field(
        description="When the task was last completed; null while it is not (read only)"
    )
    version: int = Field(
        description="Grows on every write of the task; the `ETag` of single-task responses"
    )
    labels: list[str] = Field(description="The task's labels, in the order they were set")
