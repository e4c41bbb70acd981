"""Alembic environment: same database resolution as the service, async, short lock timeout."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from taskapi.config import load_settings
from taskapi.db import create_engine
from taskapi.models import metadata

config = context.config
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

LOCK_TIMEOUT = "5s"  # a deploy's migration never queues behind a long lock


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
        # For the session; and committed, so that Alembic owns the migrations' transaction
        # (which `autocommit_block`, for CREATE INDEX CONCURRENTLY, needs).
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    # No statement timeout of the requests' (an index built concurrently on a large table
    # takes minutes); lock_timeout bounds every wait.
    engine = create_engine(load_settings(), statement_timeout=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run `alembic upgrade head`.")
elif (existing := config.attributes.get("connection")) is not None:
    _run(existing)
else:
    asyncio.run(_run_online())
