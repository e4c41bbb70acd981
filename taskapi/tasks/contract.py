"""The tasks API's HTTP contract, shared by both request paths: the path, the limits, the
page cursor and next link, the created task's location, and which bodies count as JSON."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urlencode

from taskapi.errors import APIError
from taskapi.tasks.schemas import Priority

PREFIX = "/api/v1/tasks"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_TASK_ID = 2**63 - 1
MAX_CURSOR_LENGTH = 64

QueryItems = Sequence[tuple[str, str]]


def plain_digits(value: object) -> object:
    """Only plain decimal digits are ids and page sizes: not `1_0`, `+1`, ` 1` or `1.0`,
    all of which a lax integer parser would read (as 10, 1, 1 and 1)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written in plain decimal digits")
    return value


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
        if prefix != "id" or not 0 <= value <= MAX_TASK_ID:
            raise InvalidCursorError()
        return value


class TaskFilter(NamedTuple):
    """A list request's parameters, parsed."""

    completed: bool | None = None
    priority: Priority | None = None
    after_id: int | None = None
    limit: int = DEFAULT_PAGE_SIZE


def next_link(query: QueryItems, last_id: int) -> str:
    """The `Link` to the page after `last_id`, keeping the request's other parameters."""
    params = [(k, v) for k, v in query if k != "cursor"]
    params.append(("cursor", Cursor.encode(last_id)))
    return f'<{PREFIX}?{urlencode(params)}>; rel="next"'


def location(task_id: int) -> str:
    """The `Location` of a created task."""
    return f"{PREFIX}/{task_id}"


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
