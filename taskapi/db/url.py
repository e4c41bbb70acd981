"""DATABASE_URL, as users write it (libpq style), translated for the async drivers."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy.engine import URL, make_url

from taskapi.config import ConfigError, Settings

logger = logging.getLogger("taskapi.db")

_PG_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg"}
# libpq parameters we translate; others are dropped with a warning.
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


@dataclass(frozen=True)
class ResolvedURL:
    """A DATABASE_URL translated for SQLAlchemy's async drivers."""

    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)
    behind_transaction_pooler: bool | None = False
    """The connection goes through a pooler in transaction mode (PgBouncer, Neon's `-pooler`
    host), where no named prepared statement survives; None: not known, the service finds
    out on its first connection (`PostgresDatabase`)."""

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"


def _ssl_argument(mode: str, root_cert: str | None) -> bool | str | ssl.SSLContext:
    """asyncpg's `ssl` argument for a libpq `sslmode`."""
    if mode == "disable":
        return False
    if mode in ("allow", "prefer", "require"):
        return mode  # encrypted, certificate not verified: libpq's meaning of these modes
    context = ssl.create_default_context(cafile=root_cert)
    context.check_hostname = mode == "verify-full"
    return context


def resolve_database_url(settings: Settings) -> ResolvedURL:
    """Map the spec's `postgresql://...?sslmode=require` (or unset: SQLite) to the async drivers."""
    if settings.database_url is None:
        path = Path(settings.sqlite_path).expanduser().resolve()
        return ResolvedURL(URL.create("sqlite+aiosqlite", database=str(path)))
    raw = settings.database_url.strip()
    scheme = urlsplit(raw).scheme.lower()
    if scheme.startswith("sqlite"):
        url = make_url(raw).set(drivername="sqlite+aiosqlite")
        return ResolvedURL(url)
    if scheme not in _PG_SCHEMES:
        raise ConfigError(
            f"DATABASE_URL scheme {scheme!r} is not supported: use postgresql://user:password@host"
            "/database?sslmode=require, or leave DATABASE_URL unset for the SQLite default."
        )
    # Parse the query ourselves: asyncpg does not take libpq's parameters as keywords.
    base, _, query = raw.partition("?")
    url = make_url(base).set(drivername="postgresql+asyncpg")
    params = dict(parse_qsl(query, keep_blank_values=True))
    connect_args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout_seconds,
        "command_timeout": settings.db_statement_timeout_seconds,
    }
    sslmode = params.pop("sslmode", "prefer").lower()
    if sslmode not in _SSL_MODES:
        raise ConfigError(f"DATABASE_URL sslmode={sslmode!r} is not one of {sorted(_SSL_MODES)}")
    connect_args["ssl"] = _ssl_argument(sslmode, params.pop("sslrootcert", None))
    # asyncpg authenticates with SCRAM but without channel binding; the TLS requirement above
    # still holds. Neon's URLs carry channel_binding=require, so accept and drop it.
    params.pop("channel_binding", None)
    if "connect_timeout" in params:
        connect_args["timeout"] = float(params.pop("connect_timeout"))
    # asyncpg asks for client_encoding 'utf-8'; PostgreSQL reports UTF8. PgBouncer compares
    # the two as strings and, finding them different, sends the server a SET client_encoding
    # in every transaction. The server's own spelling (sent after asyncpg's, so it wins) is
    # the same encoding, and then equal.
    server_settings = {"client_encoding": "UTF8"}
    if "application_name" in params:
        server_settings["application_name"] = params.pop("application_name")
    connect_args["server_settings"] = server_settings
    if params:
        logger.warning("DATABASE_URL parameters ignored: %s", ", ".join(sorted(params)))
    host = url.host or ""
    prepared = settings.db_prepared_statements
    if prepared is None and "-pooler" in host:
        prepared = False  # Neon's pooled endpoint is PgBouncer, transaction mode
    if prepared is False:
        # In transaction mode no named prepared statement survives a transaction.
        connect_args["statement_cache_size"] = 0
    pooler = None if prepared is None else not prepared
    return ResolvedURL(url, connect_args, behind_transaction_pooler=pooler)
