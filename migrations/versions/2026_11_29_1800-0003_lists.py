"""Lists, labels and the screens' queries: `lists`, `tasks.list_id`, `tasks.completed_at`,
`task_labels`, and the indexes of the screens (a list, due dates, recently completed).

Online on a large, busy `tasks` table (PostgreSQL), as 0002:
- the new columns are nullable without a default: a catalog-only change, no rewrite;
  existing tasks are in the inbox, and tasks completed before this revision have no
  `completed_at` (it was never recorded; they sort last in `sort=-completed_at`);
- the foreign key `(user_id, list_id) -> lists (user_id, id)` is added `NOT VALID` (an
  instant lock) and then validated, which reads the table under a lock that blocks neither
  reads nor writes;
- every index on `tasks` is built `CONCURRENTLY`, outside the migration's transaction.

On SQLite a composite foreign key cannot be added to an existing table; the service checks a
task's list in the same transaction (SQLite has one writer at a time).

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
TASK_INDEXES = {
    "ix_tasks_user_id_list_id_id": "(user_id, list_id, id)",
    "ix_tasks_user_id_due_date_id": "(user_id, due_date, id)",
    "ix_tasks_user_id_completed_at_id": "(user_id, completed_at DESC NULLS LAST, id)",
}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
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
    )
    op.create_table(
        "task_labels",
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("name_key", sa.String(150), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_task_labels_task_id_tasks", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_task_labels_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "name_key", name="pk_task_labels"),
    )
    op.create_index(
        "ix_task_labels_user_id_name_key_task_id",
        "task_labels",
        ["user_id", "name_key", "task_id"],
    )
    op.add_column("tasks", sa.Column("list_id", sa.BigInteger(), nullable=True))
    op.add_column("tasks", sa.Column("completed_at", TIMESTAMP, nullable=True))
    if _sqlite():
        for name, columns in TASK_INDEXES.items():
            # SQLite sorts NULL first ascending, so last descending: no NULLS LAST needed.
            op.execute(f"CREATE INDEX {name} ON tasks {columns.replace(' NULLS LAST', '')}")
        return
    op.execute(
        f"ALTER TABLE tasks ADD CONSTRAINT {LIST_FK} FOREIGN KEY (user_id, list_id) "
        "REFERENCES lists (user_id, id) NOT VALID"
    )
    op.execute(f"ALTER TABLE tasks VALIDATE CONSTRAINT {LIST_FK}")
    with op.get_context().autocommit_block():
        for name, columns in TASK_INDEXES.items():
            # A failed earlier attempt leaves an INVALID index behind: start afresh.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY {name} ON tasks {columns}")


def downgrade() -> None:
    if _sqlite():
        for name in TASK_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    else:
        with op.get_context().autocommit_block():
            for name in TASK_INDEXES:
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        op.execute(f"ALTER TABLE tasks DROP CONSTRAINT IF EXISTS {LIST_FK}")
    op.drop_column("tasks", "completed_at")
    op.drop_column("tasks", "list_id")
    op.drop_table("task_labels")
    op.drop_table("lists")
