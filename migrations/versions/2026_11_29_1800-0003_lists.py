"""Lists, labels and the screens' queries: `lists`, `tasks.list_id`, `tasks.completed_at`,
`task_labels`, and the indexes of the screens (a list, due dates, recently completed).

Online on a large, busy `tasks` table (PostgreSQL), as 0002:
- every statement commits by itself (autocommit), and none locks two tables the running
  service writes (`tasks`, `users`): a statement holding one's lock while waiting for the
  other's closes a cycle with a request that locks them in the other order (0002 found it
  under load). So `task_labels` is created without its foreign keys and gets them one
  statement each (each locks the new table and one of `tasks`, `users`); `lists` references
  `users` alone, and the old service never touches `lists`;
- the new columns are nullable without a default: a catalog-only change, no rewrite, under
  a lock held for an instant (and waited for at most `lock_timeout`, migrations/env.py);
  existing tasks are in the inbox, and tasks completed before this revision have no
  `completed_at` (it was never recorded; they sort last in `sort=-completed_at`);
- the foreign key `(user_id, list_id) -> lists (user_id, id)` is added `NOT VALID` (an
  instant lock) and then validated in a statement of its own, which reads the table under a
  lock that blocks neither reads nor writes;
- every index on `tasks` is built `CONCURRENTLY`;
- `IF [NOT] EXISTS` (and a look at `pg_constraint` for the constraints) makes an attempt that
  failed half way (a lock timeout) run again; the revision moves only at the end.

On SQLite a composite foreign key cannot be added to an existing table: triggers refuse a
task whose list is not its owner's, with the foreign key's name, as PostgreSQL's key does (a
list deleted between the service's check and its write; SQLite has one writer at a time, so
the trigger's read is the write's).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
LIST_FK = "fk_tasks_list_id_lists"
LABELS_INDEX = "ix_task_labels_user_id_name_key_task_id"
TASK_INDEXES = {
    "ix_tasks_user_id_list_id_id": "(user_id, list_id, id)",
    "ix_tasks_user_id_due_date_id": "(user_id, due_date, id)",
    "ix_tasks_user_id_completed_at_id": "(user_id, completed_at DESC NULLS LAST, id)",
}
# PostgreSQL: the foreign keys added after their tables, one statement each.
FOREIGN_KEYS = {
    "fk_task_labels_task_id_tasks": (
        "task_labels",
        "FOREIGN KEY (task_id) REFERENCES tasks (id) ON DELETE CASCADE",
    ),
    "fk_task_labels_user_id_users": (
        "task_labels",
        "FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE",
    ),
    LIST_FK: ("tasks", "FOREIGN KEY (user_id, list_id) REFERENCES lists (user_id, id) NOT VALID"),
}


_SQLITE_NO_LIST = (
    "NEW.list_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM lists"
    " WHERE lists.id = NEW.list_id AND lists.user_id = NEW.user_id)"
)
SQLITE_TRIGGERS = {
    name: f"""
        CREATE TRIGGER {name} BEFORE {event} ON tasks WHEN {_SQLITE_NO_LIST} BEGIN
            SELECT RAISE(ABORT, '{LIST_FK}: the list is not the owner''s');
        END"""
    for name, event in (
        ("tasks_list_insert", "INSERT"),
        ("tasks_list_update", "UPDATE OF list_id, user_id"),
    )
}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _lists(*, if_not_exists: bool | None = None) -> None:
    op.create_table(
        "lists",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_lists_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_lists"),
        sa.UniqueConstraint("user_id", "id", name="uq_lists_user_id_id"),
        sqlite_autoincrement=True,
        if_not_exists=if_not_exists,
    )


def _task_labels(*, foreign_keys: bool, if_not_exists: bool | None = None) -> None:
    constraints: list[sa.Constraint] = []
    if foreign_keys:
        constraints = [
            sa.ForeignKeyConstraint(
                ["task_id"], ["tasks.id"], name="fk_task_labels_task_id_tasks", ondelete="CASCADE"
            ),
            sa.ForeignKeyConstraint(
                ["user_id"], ["users.id"], name="fk_task_labels_user_id_users", ondelete="CASCADE"
            ),
        ]
    op.create_table(
        "task_labels",
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("name_key", sa.String(150), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        *constraints,
        sa.PrimaryKeyConstraint("task_id", "name_key", name="pk_task_labels"),
        if_not_exists=if_not_exists,
    )
    op.create_index(
        LABELS_INDEX,
        "task_labels",
        ["user_id", "name_key", "task_id"],
        if_not_exists=if_not_exists,
    )


def upgrade() -> None:
    if _sqlite():
        _lists()
        _task_labels(foreign_keys=True)
        op.add_column("tasks", sa.Column("list_id", sa.BigInteger(), nullable=True))
        op.add_column("tasks", sa.Column("completed_at", TIMESTAMP, nullable=True))
        for name, columns in TASK_INDEXES.items():
            # SQLite sorts NULL first ascending, so last descending: no NULLS LAST needed.
            op.execute(f"CREATE INDEX {name} ON tasks {columns.replace(' NULLS LAST', '')}")
        for trigger in SQLITE_TRIGGERS.values():
            op.execute(trigger)
        return
    with op.get_context().autocommit_block():
        _lists(if_not_exists=True)
        _task_labels(foreign_keys=False, if_not_exists=True)
        op.execute(
            "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS list_id BIGINT,"
            " ADD COLUMN IF NOT EXISTS completed_at TIMESTAMP WITH TIME ZONE"
        )
        for name, (table, definition) in FOREIGN_KEYS.items():
            op.execute(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint"
                f" WHERE conname = '{name}' AND conrelid = '{table}'::regclass) THEN"
                f" ALTER TABLE {table} ADD CONSTRAINT {name} {definition}; END IF; END $$"
            )
        op.execute(f"ALTER TABLE tasks VALIDATE CONSTRAINT {LIST_FK}")
        for name, columns in TASK_INDEXES.items():
            # A failed earlier attempt leaves an INVALID index behind: start afresh.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY {name} ON tasks {columns}")


def downgrade() -> None:
    if _sqlite():
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        for name in TASK_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
        op.drop_column("tasks", "completed_at")
        op.drop_column("tasks", "list_id")
        op.drop_table("task_labels")
        op.drop_table("lists")
        return
    with op.get_context().autocommit_block():
        for name in TASK_INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        # Each foreign key dropped by itself, so no statement locks two busy tables.
        for name, (table, _) in FOREIGN_KEYS.items():
            op.execute(f"ALTER TABLE IF EXISTS {table} DROP CONSTRAINT IF EXISTS {name}")
        op.execute(
            "ALTER TABLE tasks DROP COLUMN IF EXISTS completed_at, DROP COLUMN IF EXISTS list_id"
        )
        op.drop_table("task_labels", if_exists=True)
        op.execute("ALTER TABLE IF EXISTS lists DROP CONSTRAINT IF EXISTS fk_lists_user_id_users")
        op.drop_table("lists", if_exists=True)
