"""Schema revision checks, and migrating the SQLite default at start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger("taskapi.db")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The Alembic revision the database is at, or None if it was never migrated."""
    async with engine.connect() as connection:
        try:
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        except exc.DBAPIError:
            return None
        row = result.first()
        return None if row is None else str(row[0])


def head_revision() -> str:
    """The newest migration's revision."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Run `alembic upgrade head` on this engine (used for the embedded SQLite default)."""
    from alembic import command
    from alembic.config import Config

    def _upgrade(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def ensure_schema(engine: AsyncEngine, *, migrate: bool) -> None:
    """Migrate (SQLite default) or refuse to start on an out-of-date schema."""
    head = head_revision()
    current = await schema_revision(engine)
    if current == head:
        return
    if migrate:
        logger.info("migrating the database from %s to %s", current, head)
        await upgrade_to_head(engine)
        return
    raise RuntimeError(
        f"The database schema is at revision {current or 'none (empty database)'}, "
        f"this service needs {head}: run `alembic upgrade head` with the same DATABASE_URL."
    )
