"""Database access: URL mapping, backends (asyncpg for PostgreSQL, SQLAlchemy for SQLite),
the request-scoped session, and schema checks."""

from taskapi.config import Settings
from taskapi.db.engine import create_engine
from taskapi.db.schema import MIGRATIONS_DIR, ensure_schema, head_revision, schema_revision
from taskapi.db.session import (
    Database,
    DBSession,
    Query,
    Row,
    Session,
    UnitOfWork,
    UnitOfWorkRoute,
    get_session,
)
from taskapi.db.url import ResolvedURL, resolve_database_url

__all__ = [
    "MIGRATIONS_DIR",
    "DBSession",
    "Database",
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
    from taskapi.db.session import SQLiteDatabase

    resolved = resolve_database_url(settings)
    engine = create_engine(settings)
    try:
        await ensure_schema(engine, migrate=resolved.is_sqlite)
        if resolved.is_sqlite:
            return SQLiteDatabase(engine)
        database = PostgresDatabase(settings, resolved, engine)
        await database.open()
        return database
    except BaseException:
        await engine.dispose()
        raise
