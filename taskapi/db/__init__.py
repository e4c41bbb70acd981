"""Database access, by concern:

- `query`: statements compiled once, each with its typed rows;
- `backend`: what a backend provides (`Database`, `Connection`);
- `sqlite`, `postgres` (with `slots`, its connection handout): the two backends;
- `unit_of_work`: the request's transaction; `routing`: its FastAPI glue;
- `failures`: driver failures as the service's 503;
- `url`, `engine`, `schema`: `DATABASE_URL`, SQLAlchemy engines, schema revisions.
"""

from taskapi.config import Settings
from taskapi.db.backend import Connection, Database, PoolUsage
from taskapi.db.engine import create_engine
from taskapi.db.query import Params, Query, Row
from taskapi.db.routing import Session, UnitOfWorkRoute, get_session
from taskapi.db.schema import MIGRATIONS_DIR, ensure_schema, head_revision, schema_revision
from taskapi.db.unit_of_work import UnitOfWork
from taskapi.db.url import ResolvedURL, resolve_database_url

__all__ = [
    "MIGRATIONS_DIR",
    "Connection",
    "Database",
    "Params",
    "PoolUsage",
    "Query",
    "ResolvedURL",
    "Row",
    "Session",
    "UnitOfWork",
    "UnitOfWorkRoute",
    "create_engine",
    "ensure_schema",
    "get_session",
    "head_revision",
    "open_database",
    "resolve_database_url",
    "schema_revision",
]


async def open_database(settings: Settings) -> Database:
    """The backend DATABASE_URL names, ready to serve (schema checked or migrated)."""
    from taskapi.db.postgres import PostgresDatabase
    from taskapi.db.sqlite import SQLiteDatabase

    resolved = resolve_database_url(settings)
    engine = create_engine(settings)
    try:
        await ensure_schema(engine, migrate=resolved.is_sqlite)
        if resolved.is_sqlite:
            return SQLiteDatabase(engine, retry_after=settings.retry_after_seconds)
        database = PostgresDatabase(settings, resolved, engine)
        await database.open()
        return database
    except BaseException:
        await engine.dispose()
        raise
