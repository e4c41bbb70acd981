"""Settings, read from the environment or a `.env` file in the working directory."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_LENGTH = 32
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
PRODUCTION_LIKE = ("production", "staging")
# Secrets printed in the docs, or once in this repository: long enough, but public, so
# refused in every environment. (`make run` gives each checkout a random development secret.)
PLACEHOLDER_SECRETS = frozenset(
    {
        "development-only-secret-do-not-use-in-production",
        "change-me-to-at-least-32-random-characters",
        "your-secret-key-min-32-chars-change-this-in-production",
    }
)


def url_origin(url: str) -> str:
    """The origin of `url` as `scheme://host[:port]`: scheme and host in lower case, the
    port only when it is not the scheme's default."""
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    port = "" if parts.port in (None, default_port) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


class ConfigError(ValueError):
    """A setting is missing or unsafe; the message says what to set."""


class Settings(BaseSettings):
    """Every setting of the service; `.env.example` documents each one."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    environment: Literal["development", "test", "staging", "production"] = "development"
    database_url: str | None = None
    sqlite_path: str = "taskapi.db"

    jwt_secret: SecretStr | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(ASYMMETRIC_ALGORITHMS)
    )
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    jwks_cache_seconds: float = Field(default=300.0, ge=10)
    jwks_refetch_cooldown_seconds: float = Field(default=10.0, ge=0.1)
    jwks_fetch_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    max_token_bytes: int = Field(default=8192, ge=512, le=65536)
    token_cache_size: int = Field(default=10_000, ge=0)
    user_cache_size: int = Field(default=10_000, ge=0)

    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000"]
    )

    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Overflow connections are closed on return, so under load they churn (a TLS handshake
    # per request); queueing for a pooled connection is faster. Raise DB_POOL_SIZE instead.
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    db_statement_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    db_idle_ping_seconds: float = Field(default=10.0, ge=0)
    db_prepared_statements: bool | None = None
    retry_after_seconds: int = Field(default=5, ge=1, le=3600)

    max_body_bytes: int = Field(default=65_536, ge=1024, le=10 * 1024 * 1024)
    # Enforced by the service's HTTP protocol (`--http taskapi.server:HttpToolsProtocol`, as
    # the README's production command and `make run` start it): a request's headers must be
    # complete this long after the connection opens (or, on a kept-alive connection, after
    # the request's first byte), and its whole body this long after its headers.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)

    idempotency_ttl_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    tombstone_retention_days: float = Field(default=30.0, gt=0, le=3650)
    purge_interval_seconds: float = Field(default=600.0, ge=1, le=86_400)

    rate_limit_enabled: bool = True
    rate_limit_per_minute: int = Field(default=600, ge=1)
    rate_limit_burst: int = Field(default=100, ge=1)
    rate_limit_anonymous_per_minute: int = Field(default=120, ge=1)
    redis_url: str | None = None

    log_level: str = "INFO"
    # json: one JSON object per line; text: readable lines. Unset: json in production and
    # staging, text elsewhere (`resolved_log_format`).
    log_format: Literal["json", "text"] | None = None
    # The service's own access log: one line per request (uvicorn's is always silenced).
    access_log: bool = True

    # Prometheus metrics at GET /metrics: off unless enabled, and then only with a bearer
    # token or on a separate port (never public by accident; see `_check_safety`).
    metrics_enabled: bool = False
    metrics_token: SecretStr | None = None
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # prometheus-client's own variable: the directory all worker processes share their
    # counts through (it reads it from the process environment when imported).
    prometheus_multiproc_dir: str | None = None
    # FastAPI's built-in OpenTelemetry instrumentation (needs an OTel SDK configured). Off
    # by default: even unconfigured it costs a few percent of every request.
    telemetry_enabled: bool = False
    tasks_fast_path: bool = True

    @field_validator("cors_origins", "jwt_algorithms", mode="before")
    @classmethod
    def _parse_list(cls, value: object) -> object:
        """Accept a JSON array (the spec's form) or a comma-separated list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a valid JSON array: {exc.msg}") from None
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        """Only asymmetric algorithms may come from a JWKS."""
        unknown = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if unknown:
            raise ValueError(
                f"unsupported algorithm(s) {unknown}; choose from {list(ASYMMETRIC_ALGORITHMS)}"
            )
        return value

    @field_validator(
        "jwt_secret",
        "jwks_url",
        "jwt_issuer",
        "jwt_audience",
        "redis_url",
        "database_url",
        "metrics_token",
        "metrics_port",
        "log_format",
        "prometheus_multiproc_dir",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable means unset, as a blank line in `.env` would."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_safety(self) -> Settings:
        """Refuse unsafe settings with a message naming what to set.

        A well-known secret is refused everywhere; a missing key (no JWT_SECRET, no JWKS_URL)
        here only in production, and by `require_verification_key` when the service starts,
        so that tools that need no key (`alembic`) still run without one.
        """
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else None
        if secret is not None and secret.strip() in PLACEHOLDER_SECRETS:
            raise ConfigError(
                "JWT_SECRET is a placeholder printed in the documentation, so anyone could sign "
                "tokens with it: set the secret your Better Auth server uses "
                f"(at least {MIN_SECRET_LENGTH} random characters, e.g. `openssl rand -hex 32`)."
            )
        if self.environment in PRODUCTION_LIKE:
            if secret is None and self.jwks_url is None:
                raise ConfigError(
                    "JWT_SECRET is not set. Set JWT_SECRET to the secret your Better Auth server "
                    f"uses (at least {MIN_SECRET_LENGTH} characters, e.g. `openssl rand -hex 32`), "
                    "or set JWKS_URL to Better Auth's /api/auth/jwks endpoint."
                )
            if secret is not None and len(secret) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"JWT_SECRET is too short for ENVIRONMENT={self.environment}: "
                    f"use at least {MIN_SECRET_LENGTH} random characters (`openssl rand -hex 32`)."
                )
            if self.metrics_enabled and self.metrics_token is not None:
                token = self.metrics_token.get_secret_value()
                if len(token) < MIN_SECRET_LENGTH or token in PLACEHOLDER_SECRETS:
                    raise ConfigError(
                        f"METRICS_TOKEN is too short or a placeholder for "
                        f"ENVIRONMENT={self.environment}: use at least {MIN_SECRET_LENGTH} "
                        "random characters (`openssl rand -hex 32`)."
                    )
            if any(origin.strip() == "*" for origin in self.cors_origins):
                raise ConfigError(
                    "CORS_ORIGINS contains '*', which is refused in production: list the exact "
                    'frontend origins, e.g. CORS_ORIGINS=["https://app.example.com"].'
                )
        if self.metrics_enabled and self.metrics_token is None and self.metrics_port is None:
            raise ConfigError(
                "METRICS_ENABLED=true needs METRICS_TOKEN (a bearer token the scraper sends) "
                "or METRICS_PORT (a separate port that serves only /metrics), so that /metrics "
                "is never public by accident: set one of them, or METRICS_ENABLED=false."
            )
        return self

    def require_verification_key(self) -> None:
        """The service verifies tokens with JWT_SECRET or JWKS_URL: refuse to start with neither
        (in every environment: no secret is ever made up)."""
        if self.jwt_secret is None and self.jwks_url is None:
            raise ConfigError(
                "neither JWT_SECRET nor JWKS_URL is set, so no token could be verified. Set "
                "JWT_SECRET to the secret your Better Auth server uses (at least "
                f"{MIN_SECRET_LENGTH} characters, e.g. `openssl rand -hex 32`), or JWKS_URL to "
                "Better Auth's /api/auth/jwks endpoint. For local development, `make run` writes "
                "a random JWT_SECRET into .env (and `make token` signs with it)."
            )

    @property
    def resolved_log_format(self) -> Literal["json", "text"]:
        """LOG_FORMAT, else json in production and staging and text elsewhere."""
        if self.log_format is not None:
            return self.log_format
        return "json" if self.is_production else "text"

    @property
    def is_production(self) -> bool:
        """Whether the production-only safety rules apply."""
        return self.environment in PRODUCTION_LIKE

    @cached_property
    def jwks_origin(self) -> str | None:
        """Better Auth's base URL as seen from JWKS_URL (scheme://host[:port])."""
        return None if self.jwks_url is None else url_origin(self.jwks_url)

    @property
    def expected_issuer(self) -> str | None:
        """Issuer required of JWKS-verified tokens: JWT_ISSUER, else Better Auth's base URL."""
        return self.jwt_issuer or self.jwks_origin

    @property
    def expected_audience(self) -> str | None:
        """Audience required of JWKS-verified tokens: JWT_AUDIENCE, else Better Auth's base URL."""
        return self.jwt_audience or self.jwks_origin


def load_settings() -> Settings:
    """Read settings, turning validation failures into one readable ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{field}: {message}")
        raise ConfigError("Invalid configuration:\n  " + "\n  ".join(problems)) from None
