"""Sync: task versions, the per-user change feed (change numbers, tombstones) and
idempotency keys.

Online on a large, busy `tasks` table (PostgreSQL):
- the new columns have constant defaults, which PostgreSQL 11+ records in the catalog
  without rewriting the table, so `ALTER TABLE` holds its lock for an instant (and waits for
  it at most `lock_timeout`, set in `migrations/env.py`);
- every statement commits by itself (autocommit), so none holds a lock while another waits:
  the running service locks tasks then users (a task's INSERT checks its foreign key), and
  behind a transaction pooler users then tasks (a new user's first create), and one
  transaction holding either table's lock while waiting for the other's deadlocked with
  one of them (tests/faults/test_online_migration.py); `IF [NOT] EXISTS` makes an attempt
  that failed half way (a lock timeout) run again; the revision moves only at the end;
- the feed's index is built with `CREATE INDEX CONCURRENTLY`, which takes no lock that
  blocks reads or writes;
- existing tasks keep change number 0 (an initial sync lists them; ties are broken by id).

On SQLite, triggers keep the user's change counter and the tombstones (a data-modifying
`WITH` is PostgreSQL's; SQLite has one writer at a time, so a trigger's read-then-write is
atomic there). On PostgreSQL the service's statements do both themselves.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
FEED_INDEX = "ix_tasks_user_id_change_seq_id"

# SQLite stores UTCDateTime naive, as SQLAlchemy writes it: 'YYYY-MM-DD HH:MM:SS.ffffff'.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
SQLITE_TRIGGERS = {
    "tasks_change_seq_insert": """
        CREATE TRIGGER tasks_change_seq_insert AFTER INSERT ON tasks BEGIN
            UPDATE users SET change_seq = NEW.change_seq
            WHERE id = NEW.user_id AND change_seq < NEW.change_seq;
        END""",
    "tasks_change_seq_update": """
        CREATE TRIGGER tasks_change_seq_update AFTER UPDATE OF change_seq ON tasks BEGIN
            UPDATE users SET change_seq = NEW.change_seq
            WHERE id = NEW.user_id AND change_seq < NEW.change_seq;
        END""",
    "tasks_tombstone": f"""
        CREATE TRIGGER tasks_tombstone AFTER DELETE ON tasks
        WHEN EXISTS (SELECT 1 FROM users WHERE id = OLD.user_id) BEGIN
            UPDATE users SET change_seq = change_seq + 1 WHERE id = OLD.user_id;
            INSERT INTO task_tombstones (user_id, task_id, version, change_seq, deleted_at)
            SELECT OLD.user_id, OLD.id, OLD.version + 1, change_seq, {_SQLITE_NOW}
            FROM users WHERE id = OLD.user_id;
        END""",
}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    if _sqlite():
        _create()
        op.create_index(FEED_INDEX, "tasks", ["user_id", "change_seq", "id"])
        for trigger in SQLITE_TRIGGERS.values():
            op.execute(trigger)
        return
    with op.get_context().autocommit_block():
        _create(if_not_exists=True)
        # A failed earlier attempt leaves an INVALID index behind: start afresh.
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {FEED_INDEX}")
        op.execute(f"CREATE INDEX CONCURRENTLY {FEED_INDEX} ON tasks (user_id, change_seq, id)")


def _create(*, if_not_exists: bool | None = None) -> None:
    """The new columns, tables and their indexes (not the feed's index)."""
    op.add_column(
        "users",
        sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False),
        if_not_exists=if_not_exists,
    )
    op.add_column(
        "tasks",
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        if_not_exists=if_not_exists,
    )
    op.add_column(
        "tasks",
        sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False),
        if_not_exists=if_not_exists,
    )
    op.create_table(
        "task_tombstones",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_task_tombstones_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "task_id", name="pk_task_tombstones"),
        if_not_exists=if_not_exists,
    )
    op.create_index(
        "ix_task_tombstones_user_id_change_seq_task_id",
        "task_tombstones",
        ["user_id", "change_seq", "task_id"],
        if_not_exists=if_not_exists,
    )
    op.create_index(
        "ix_task_tombstones_deleted_at",
        "task_tombstones",
        ["deleted_at"],
        if_not_exists=if_not_exists,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_idempotency_keys_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name="pk_idempotency_keys"),
        if_not_exists=if_not_exists,
    )
    op.create_index(
        "ix_idempotency_keys_created_at",
        "idempotency_keys",
        ["created_at"],
        if_not_exists=if_not_exists,
    )


def downgrade() -> None:
    if _sqlite():
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.drop_index(FEED_INDEX, table_name="tasks")
        _drop()
        return
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {FEED_INDEX}")
        _drop(if_exists=True)


def _drop(*, if_exists: bool | None = None) -> None:
    op.drop_table("idempotency_keys", if_exists=if_exists)
    op.drop_table("task_tombstones", if_exists=if_exists)
    op.drop_column("tasks", "change_seq", if_exists=if_exists)
    op.drop_column("tasks", "version", if_exists=if_exists)
    op.drop_column("users", "change_seq", if_exists=if_exists)
