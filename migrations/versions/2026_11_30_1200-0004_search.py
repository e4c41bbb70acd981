"""Search (`q=`): PostgreSQL full text under a GIN index with the owner; SQLite FTS5.

PostgreSQL, online on a large, busy `tasks` table, as 0002 and 0003 (every statement in
autocommit, `IF [NOT] EXISTS` or `OR REPLACE`, so a failed attempt runs again):
- the extensions `unaccent` (accents) and `btree_gin` (the owner in a GIN index), both
  trusted extensions since PostgreSQL 13 (a database owner may create them; Neon has both);
  `downgrade` leaves them installed, as something else may use them;
- `taskapi_unaccent(text)`: `unaccent` with its dictionary named, so IMMUTABLE (the
  extension's own function is STABLE and cannot be indexed), and every name qualified (an
  index expression must not depend on the search_path, e.g. during a restore);
- `taskapi_search_document(title, description)`: the task's `tsvector` in the `simple`
  configuration (lower case, no stemming, no stop words), the title weighted A and the
  description D. No column is added: a stored generated column would rewrite the table;
  the index holds the expression, and the query repeats it;
- `ix_tasks_search`, GIN over `(user_id, taskapi_search_document(title, description))`,
  built `CONCURRENTLY`: a search reads only the owner's matching rows.

SQLite: an FTS5 table with `tasks` as its external content (`unicode61 remove_diacritics 2`:
case and accents folded), kept by triggers, filled once here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_INDEX = "ix_tasks_search"
UNACCENT = "taskapi_unaccent"
DOCUMENT = "taskapi_search_document"

SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE tasks_fts USING fts5(title, description, content='tasks',"
    " content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
)
_FTS_DELETE = (
    "INSERT INTO tasks_fts (tasks_fts, rowid, title, description)"
    " VALUES ('delete', OLD.id, OLD.title, OLD.description);"
)
_FTS_INSERT = (
    "INSERT INTO tasks_fts (rowid, title, description) VALUES (NEW.id, NEW.title, NEW.description);"
)
SQLITE_TRIGGERS = {
    name: f"CREATE TRIGGER {name} AFTER {event} ON tasks BEGIN {body} END"
    for name, event, body in (
        ("tasks_fts_insert", "INSERT", _FTS_INSERT),
        ("tasks_fts_delete", "DELETE", _FTS_DELETE),
        ("tasks_fts_update", "UPDATE OF title, description", f"{_FTS_DELETE} {_FTS_INSERT}"),
    )
}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _schema_of_extension(name: str) -> str:
    found = op.get_bind().execute(
        sa.text(
            "SELECT quote_ident(n.nspname) FROM pg_extension e"
            " JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = :name"
        ),
        {"name": name},
    )
    return str(found.scalar_one())


def _current_schema() -> str:
    found = op.get_bind().execute(sa.text("SELECT quote_ident(current_schema())"))
    return str(found.scalar_one())


def upgrade() -> None:
    if _sqlite():
        op.execute(SQLITE_TABLE)
        for trigger in SQLITE_TRIGGERS.values():
            op.execute(trigger)
        op.execute("INSERT INTO tasks_fts (tasks_fts) VALUES ('rebuild')")
        return
    with op.get_context().autocommit_block():
        op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
        dictionary = _schema_of_extension("unaccent")
        here = _current_schema()  # where the functions are created
        literal = f"{dictionary}.unaccent".replace("'", "''")
        op.execute(
            f"CREATE OR REPLACE FUNCTION {here}.{UNACCENT}(text) RETURNS text"
            " LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT"
            f" AS $$ SELECT {dictionary}.unaccent('{literal}'::regdictionary, $1) $$"
        )
        op.execute(
            f"CREATE OR REPLACE FUNCTION {here}.{DOCUMENT}(title text, description text)"
            " RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT"
            f" setweight(to_tsvector('pg_catalog.simple', {here}.{UNACCENT}(title)), 'A')"
            f" || setweight(to_tsvector('pg_catalog.simple',"
            f" {here}.{UNACCENT}(coalesce(description, ''))), 'D') $$"
        )
        # A failed earlier attempt leaves an INVALID index behind: start afresh.
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {SEARCH_INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {SEARCH_INDEX} ON tasks"
            f" USING gin (user_id, {DOCUMENT}(title, description))"
        )


def downgrade() -> None:
    if _sqlite():
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS tasks_fts")
        return
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {SEARCH_INDEX}")
        op.execute(f"DROP FUNCTION IF EXISTS {DOCUMENT}(text, text)")
        op.execute(f"DROP FUNCTION IF EXISTS {UNACCENT}(text)")
