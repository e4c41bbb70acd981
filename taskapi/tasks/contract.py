"""The tasks API's HTTP contract, shared by both request paths: the path, the limits, the
page cursor and next link, the created task's location, and which bodies count as JSON."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import urlencode

import orjson

from taskapi.errors import APIError
from taskapi.tasks.schemas import Priority

PREFIX = "/api/v1/tasks"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_TASK_ID = 2**63 - 1
MAX_CURSOR_LENGTH = 64

QueryItems = Sequence[tuple[str, str]]
_PLAIN = (None, False, None, None, None, None, None, None, (), (), ())


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
        if prefix != "id" or not 0 <= value <= MAX_TASK_ID or Cursor.encode(value) != cursor:
            raise InvalidCursorError()  # only what `encode` issues: CURSOR_PATTERN, exactly
        return value


class TaskFilter(NamedTuple):
    """A list request's parameters, parsed. The first four are all the fast path reads;
    a request with any of the others pages with a `KeysetCursor`."""

    completed: bool | None = None
    priority: Priority | None = None
    after_id: int | None = None
    limit: int = DEFAULT_PAGE_SIZE
    list_id: int | None = None
    inbox: bool = False
    due_after: datetime | None = None
    due_before: datetime | None = None
    overdue: bool | None = None
    has_due: bool | None = None
    completed_after: datetime | None = None
    completed_before: datetime | None = None
    sort: tuple[SortKey, ...] = ()
    labels: tuple[str, ...] = ()
    """Label keys (lower case) a task must all carry."""
    search: tuple[str, ...] = ()
    """The words of `q` (`taskapi.search.words`), each of which a task must match."""
    after: KeysetCursor | None = None

    def keyed(self) -> bool:
        """Whether this request pages with a `KeysetCursor` (anything but the plain list)."""
        return self[4:15] != _PLAIN

    def digest(self) -> str:
        """What a keyset cursor is bound to: the sort and every filter."""
        text = repr((self.completed, self.priority, *self[4:15]))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class SortKey(NamedTuple):
    """One key of `sort=`: a field, and whether it is reversed (`-field`)."""

    field: str
    descending: bool


SORT_FIELDS = (
    "due_date",
    "priority",
    "created_at",
    "updated_at",
    "completed_at",
    "title",
    "relevance",
)
SORT_PATTERN = f"^-?({'|'.join(SORT_FIELDS)})(,-?({'|'.join(SORT_FIELDS)}))*$"
MAX_SORT_LENGTH = 100
PRIORITY_RANK = {"high": 1, "medium": 2, "low": 3}
"""`sort=priority`: high before medium before low (before none, as every missing value)."""


class InvalidQueryError(APIError):
    status_code = 422
    code = "VALIDATION_ERROR"


def parse_sort(value: str | None) -> tuple[SortKey, ...]:
    """`sort=` as keys (else a 422 naming `query.sort`). A key repeated is redundant: rows
    tied on its first occurrence are tied on any later one, so the first decides and the
    others are dropped (the schema's pattern cannot say "distinct", and need not)."""
    if value is None:
        return ()
    keys: dict[str, SortKey] = {}
    for part in value.split(","):
        key = SortKey(part.lstrip("-"), part.startswith("-"))
        if key.field not in SORT_FIELDS:
            raise InvalidQueryError(
                f"query.sort: a comma-separated list of {', '.join(SORT_FIELDS)}, "
                "each optionally preceded by '-'"
            )
        keys.setdefault(key.field, key)
    return tuple(keys.values())


MAX_KEYSET_CURSOR_LENGTH = 4096
"""Room for the longest cursor issued: a title of 200 characters JSON escapes to at most
1,200 bytes (`\u0001` for each), and base64 makes 4 characters of every 3 bytes."""
_KEYSET = "k1"


class KeysetCursor(NamedTuple):
    """The `cursor` of a sorted or filtered page: the last task's sort values and id, and
    the digest of the sort and filters it was issued for (used with others: a 422)."""

    values: tuple[Any, ...]
    id: int
    digest: str

    def encode(self) -> str:
        document = orjson.dumps([_KEYSET, self.digest, self.id, list(self.values)])
        return base64.urlsafe_b64encode(document).decode().rstrip("=")

    @staticmethod
    def decode(cursor: str, page: TaskFilter) -> KeysetCursor:
        """The position `cursor` holds, for `page` (its sort and filters); else a 422."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            tag, digest, last_id, values = orjson.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidCursorError() from None
        if tag != _KEYSET or digest != page.digest() or not isinstance(values, list):
            raise InvalidCursorError()
        if type(last_id) is not int or not 0 <= last_id <= MAX_TASK_ID:
            raise InvalidCursorError()
        if len(values) != len(page.sort):
            raise InvalidCursorError()
        parsed = []
        for key, value in zip(page.sort, values, strict=True):
            parsed.append(_cursor_value(key.field, value))
        return KeysetCursor(tuple(parsed), last_id, digest)


def _cursor_value(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field == "relevance":
        if type(value) in (int, float):  # the negated rank (a JSON number, never bool)
            return float(value)
        raise InvalidCursorError()
    if field == "title" and isinstance(value, str):
        return value
    if field == "priority" and type(value) is int and value in PRIORITY_RANK.values():
        return value
    if field not in ("title", "priority") and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidCursorError()


def sort_values(page: TaskFilter, document: bytes, rank: float | None = None) -> tuple[Any, ...]:
    """A rendered task's values of the page's sort keys, as its cursor holds them (for
    `relevance`, the negated rank its query returned)."""
    task = orjson.loads(document)
    values: list[Any] = []
    for key in page.sort:
        if key.field == "relevance":
            values.append(rank)
            continue
        value = task[key.field]
        values.append(PRIORITY_RANK[value] if key.field == "priority" and value else value)
    return tuple(values)


def next_link(query: QueryItems, last_id: int, cursor: str | None = None) -> str:
    """The `Link` to the page after `last_id` (or `cursor`), keeping the request's other
    parameters."""
    params = [(k, v) for k, v in query if k != "cursor"]
    params.append(("cursor", cursor or Cursor.encode(last_id)))
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


# ---- versions and conditional requests (RFC 9110) ------------------------------------------

MAX_ETAGS = 8
"""The most entity tags one `If-Match` or `If-None-Match` may list."""
MAX_PRECONDITION_LENGTH = 512
_TAG = r'(W/)?"([0-9]{1,19})"'
ENTITY_TAGS_PATTERN = rf"^(\*|{_TAG}( *, *{_TAG}){{0,{MAX_ETAGS - 1}}})$"
"""`*`, or a list of entity tags (strong or weak) of versions, as OpenAPI states it."""
_ENTITY_TAGS = re.compile(ENTITY_TAGS_PATTERN)
_ENTITY_TAG = re.compile(_TAG)


def etag(version: int) -> bytes:
    """The strong `ETag` of a task at `version`."""
    return b'"%d"' % version


class InvalidPreconditionError(APIError):
    status_code = 422
    code = "VALIDATION_ERROR"

    def __init__(self, header: str) -> None:
        super().__init__(
            f'header.{header}: a list of at most {MAX_ETAGS} entity tags such as "3", or *'
        )


class EntityTags(NamedTuple):
    """An `If-Match` or `If-None-Match` header: `*`, or versions (strong and weak)."""

    any: bool
    strong: tuple[int, ...]
    weak: tuple[int, ...]

    @staticmethod
    def parse(header: str, value: str | None) -> EntityTags | None:
        """The header's entity tags (None when absent); a malformed one is a 422."""
        if value is None:
            return None
        if _ENTITY_TAGS.fullmatch(value) is None:
            raise InvalidPreconditionError(header)
        if value == "*":
            return EntityTags(True, (), ())
        strong: list[int] = []
        weak: list[int] = []
        for match in _ENTITY_TAG.finditer(value):
            version = int(match[2])
            if version <= MAX_TASK_ID:  # no task reaches a larger version: it matches nothing
                (weak if match[1] else strong).append(version)
        return EntityTags(False, tuple(strong), tuple(weak))

    def strong_match_versions(self) -> tuple[int, ...] | None:
        """`If-Match`: the versions a write may apply to (strong comparison); None for `*`."""
        return None if self.any else self.strong

    def weak_match(self, version: int) -> bool:
        """`If-None-Match`: whether `version` is named (weak comparison)."""
        return self.any or version in self.strong or version in self.weak


# ---- idempotent creates (IETF httpapi Idempotency-Key draft) -------------------------------

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


class InvalidIdempotencyKeyError(APIError):
    status_code = 422
    code = "VALIDATION_ERROR"
    detail = "header.Idempotency-Key: 1 to 255 visible ASCII characters"


def idempotency_key(value: str | None) -> str | None:
    """The `Idempotency-Key` header's key (None when absent); a malformed one is a 422."""
    if value is None:
        return None
    if _IDEMPOTENCY_KEY.fullmatch(value) is None:
        raise InvalidIdempotencyKeyError()
    return value


# ---- the change feed's sync tokens ---------------------------------------------------------

MAX_SYNC_TOKEN_LENGTH = 128
_NUMBER = "(0|[1-9][0-9]{0,18})"
SYNC_TOKEN_PATTERN = rf"^c1\.{_NUMBER}\.{_NUMBER}\.(0|[1-9][0-9]{{0,11}})\.[0-9a-f]{{16}}$"
SYNC_TOKEN = re.compile(SYNC_TOKEN_PATTERN)


class InvalidSyncTokenError(APIError):
    status_code = 422
    code = "VALIDATION_ERROR"
    detail = "query.since: invalid sync token; use the `next` of an earlier answer"


class SyncToken(NamedTuple):
    """A position in one user's change feed: everything up to `(change_seq, id)` was sent,
    as of `issued` (Unix seconds). Opaque to clients (its form may change); bound to its
    user by a tag."""

    change_seq: int
    id: int
    issued: int

    def encode(self, owner_id: str) -> str:
        return f"c1.{self.change_seq}.{self.id}.{self.issued}.{_owner_tag(owner_id)}"

    @staticmethod
    def decode(token: str, owner_id: str) -> SyncToken:
        """The token's position; a malformed token, or another user's, is a 422 that says
        nothing more."""
        match = SYNC_TOKEN.fullmatch(token)
        if match is None or not hmac.compare_digest(token[-16:], _owner_tag(owner_id)):
            raise InvalidSyncTokenError()
        seq, last_id, issued = int(match[1]), int(match[2]), int(match[3])
        if seq > MAX_TASK_ID or last_id > MAX_TASK_ID:
            raise InvalidSyncTokenError()
        return SyncToken(seq, last_id, issued)


def _owner_tag(owner_id: str) -> str:
    return hashlib.sha256(b"taskapi-sync:" + owner_id.encode()).hexdigest()[:16]
