"""Every table in one place (SQLAlchemy Core), with an explicit constraint naming convention."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

USER_ID_MAX = 255
EMAIL_MAX = 320
NAME_MAX = 255
AVATAR_URL_MAX = 2048
TITLE_MAX = 200
DESCRIPTION_MAX = 10_000
LIST_NAME_MAX = 100
LABEL_MAX = 50
LABELS_PER_TASK = 20


def unstorable_reason(value: str) -> str | None:
    """Why PostgreSQL cannot store `value` as text (NUL, or a lone UTF-16 surrogate, which
    is not UTF-8), or None if it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(USER_ID_MAX), primary_key=True),
    sa.Column("email", sa.String(EMAIL_MAX), nullable=True),
    sa.Column("name", sa.String(NAME_MAX), nullable=True),
    sa.Column("avatar_url", sa.String(AVATAR_URL_MAX), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The user's change counter: every write of one of the user's tasks takes the next value
    # (`tasks.change_seq`, `task_tombstones.change_seq`) while holding this row's lock, so the
    # user's changes commit in the order of their numbers (docs/design.md, "Syncing").
    sa.Column("change_seq", sa.BigInteger(), nullable=False, server_default="0"),
)

# A user's task list; a task with `list_id` NULL is in the inbox.
lists = sa.Table(
    "lists",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.Identity(always=False),
        primary_key=True,
    ),
    sa.Column(
        "user_id",
        sa.String(USER_ID_MAX),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(LIST_NAME_MAX), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The owner's lists in id order, and the target of tasks' (user_id, list_id): a task can
    # only ever be in a list of its own owner.
    sa.UniqueConstraint("user_id", "id", name="uq_lists_user_id_id"),
    sqlite_autoincrement=True,
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.Identity(always=False),
        primary_key=True,
    ),
    sa.Column("title", sa.String(TITLE_MAX), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("completed", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("priority", sa.String(10), nullable=True),
    sa.Column("due_date", UTCDateTime(), nullable=True),
    sa.Column(
        "user_id",
        sa.String(USER_ID_MAX),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"),
    sa.Column("change_seq", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("list_id", sa.BigInteger(), nullable=True),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.CheckConstraint("priority IN ('low', 'medium', 'high')", name="priority"),
    # PostgreSQL only (migration 0003): SQLite cannot add a composite foreign key to a table.
    sa.ForeignKeyConstraint(
        ["user_id", "list_id"], ["lists.user_id", "lists.id"], name="fk_tasks_list_id_lists"
    ),
    # Keyset pagination per owner, alone or with one filter: each query is an index range scan.
    sa.Index("ix_tasks_user_id_id", "user_id", "id"),
    sa.Index("ix_tasks_user_id_completed_id", "user_id", "completed", "id"),
    sa.Index("ix_tasks_user_id_priority_id", "user_id", "priority", "id"),
    # The change feed: the owner's changes after a position, in order.
    sa.Index("ix_tasks_user_id_change_seq_id", "user_id", "change_seq", "id"),
    # The screens (migration 0003): a list or the inbox; by due date (today, this week,
    # overdue); recently completed (`sort=-completed_at`, nulls last).
    sa.Index("ix_tasks_user_id_list_id_id", "user_id", "list_id", "id"),
    sa.Index("ix_tasks_user_id_due_date_id", "user_id", "due_date", "id"),
    sa.Index(
        "ix_tasks_user_id_completed_at_id",
        "user_id",
        sa.text("completed_at DESC NULLS LAST"),
        "id",
    ),
    sqlite_autoincrement=True,  # never reuse a deleted task's id
)

# A task's labels, one row each: `name` as the client wrote it (trimmed), `name_key` its
# lower case, by which labels are the same; `position` keeps the client's order.
task_labels = sa.Table(
    "task_labels",
    metadata,
    sa.Column(
        "task_id",
        sa.BigInteger(),
        sa.ForeignKey("tasks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # Lower case can be longer than the name (e.g. "İ" is two characters lowered).
    sa.Column("name_key", sa.String(LABEL_MAX * 3), primary_key=True),
    sa.Column(
        "user_id",
        sa.String(USER_ID_MAX),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(LABEL_MAX), nullable=False),
    sa.Column("position", sa.SmallInteger(), nullable=False),
    # "Tasks carrying all of these labels" (one index probe per label) and label counts.
    sa.Index("ix_task_labels_user_id_name_key_task_id", "user_id", "name_key", "task_id"),
)

# A deleted task, kept `TOMBSTONE_RETENTION_DAYS` so that the change feed reports it.
task_tombstones = sa.Table(
    "task_tombstones",
    metadata,
    sa.Column(
        "user_id",
        sa.String(USER_ID_MAX),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("task_id", sa.BigInteger(), primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("change_seq", sa.BigInteger(), nullable=False),
    sa.Column("deleted_at", UTCDateTime(), nullable=False),
    sa.Index("ix_task_tombstones_user_id_change_seq_task_id", "user_id", "change_seq", "task_id"),
    sa.Index("ix_task_tombstones_deleted_at", "deleted_at"),
)

IDEMPOTENCY_KEY_MAX = 255

# The first answer to a create sent with an `Idempotency-Key`, replayed to its retries.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column(
        "user_id",
        sa.String(USER_ID_MAX),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("key", sa.String(IDEMPOTENCY_KEY_MAX), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("task_id", sa.BigInteger(), nullable=False),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_idempotency_keys_created_at", "created_at"),
)
