"""Settings, DATABASE_URL translation and the startup refusals (unit tests and subprocesses)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from taskapi.app import create_app
from taskapi.config import (
    PLACEHOLDER_SECRETS,
    ConfigError,
    Settings,
    load_settings,
)
from taskapi.db import resolve_database_url
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
GOOD_SECRET = "0123456789abcdef0123456789abcdef01234567"  # 40 characters
# What an unconfigured development service used to accept, printed in the repository.
FORMERLY_PUBLIC_SECRET = "development-only-secret-do-not-use-in-production"
ENV_VARS = (
    "ENVIRONMENT",
    "DATABASE_URL",
    "SQLITE_PATH",
    "JWT_SECRET",
    "JWT_ALGORITHM",
    "JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_ALGORITHMS",
    "CORS_ORIGINS",
    "DB_PREPARED_STATEMENTS",
    "REDIS_URL",
    "LOG_LEVEL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the developer's environment or a `.env` file."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _error_text(error: BaseException) -> str:
    return str(error)


# --- production refusals -------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_production_refuses_missing_secret_and_jwks(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    with pytest.raises((ValidationError, ConfigError)) as info:
        Settings(_env_file=None)
    text = _error_text(info.value)
    assert "JWT_SECRET" in text
    assert "JWKS_URL" in text


def test_load_settings_production_missing_secret_is_readable_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "JWT_SECRET" in text
    assert "Traceback" not in text
    assert "pydantic" not in text.lower()


def test_production_refuses_short_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", "x" * 31)
    with pytest.raises((ValidationError, ConfigError)) as info:
        Settings(_env_file=None)
    assert "JWT_SECRET" in str(info.value)
    with pytest.raises(ConfigError) as loaded:
        load_settings()
    assert "JWT_SECRET" in str(loaded.value)


def test_production_accepts_32_char_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", "y" * 32)
    loaded = Settings(_env_file=None)
    assert loaded.jwt_secret is not None
    assert loaded.jwt_secret.get_secret_value() == "y" * 32
    assert loaded.is_production


@pytest.mark.parametrize("placeholder", sorted(PLACEHOLDER_SECRETS))
def test_production_refuses_placeholder_secrets(
    monkeypatch: pytest.MonkeyPatch, placeholder: str
) -> None:
    assert len(placeholder) >= 32  # refused for being public, not for being short
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", placeholder)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "JWT_SECRET" in str(info.value)


def test_documented_placeholders_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example values from the spec and `.env.example` must never pass in production."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    for placeholder in (
        FORMERLY_PUBLIC_SECRET,
        "your-secret-key-min-32-chars-change-this-in-production",
        "change-me-to-at-least-32-random-characters",
    ):
        monkeypatch.setenv("JWT_SECRET", placeholder)
        with pytest.raises(ConfigError) as info:
            load_settings()
        assert "JWT_SECRET" in str(info.value)


@pytest.mark.parametrize("origins", ['["*"]', "*", '["https://app.example.com", "*"]'])
def test_production_refuses_wildcard_cors(monkeypatch: pytest.MonkeyPatch, origins: str) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", GOOD_SECRET)
    monkeypatch.setenv("CORS_ORIGINS", origins)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "CORS_ORIGINS" in str(info.value)


def test_production_accepts_jwks_url_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWKS_URL", "https://auth.example.com/api/auth/jwks")
    loaded = load_settings()
    assert loaded.jwt_secret is None
    assert loaded.jwks_url == "https://auth.example.com/api/auth/jwks"
    assert loaded.expected_issuer == "https://auth.example.com"


def test_production_accepts_good_secret_and_explicit_origins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", GOOD_SECRET)
    monkeypatch.setenv("CORS_ORIGINS", '["https://app.example.com"]')
    loaded = load_settings()
    assert loaded.cors_origins == ["https://app.example.com"]
    assert loaded.jwt_secret is not None
    assert loaded.jwt_secret.get_secret_value() == GOOD_SECRET


# --- development ---------------------------------------------------------------------------


@pytest.mark.parametrize("environment", [None, "development", "test"])
def test_service_without_any_key_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, environment: str | None
) -> None:
    """No JWT_SECRET and no JWKS_URL: no service, whatever ENVIRONMENT says (unset included),
    rather than one that accepts tokens signed with a secret printed in the repository."""
    if environment is not None:
        monkeypatch.setenv("ENVIRONMENT", environment)
    settings = load_settings()
    assert settings.jwt_secret is None  # no secret is made up
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    text = str(info.value)
    assert "JWT_SECRET" in text
    assert "JWKS_URL" in text
    assert "make run" in text


def test_default_environment_is_development(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = Settings(_env_file=None)
    assert loaded.environment == "development"
    assert loaded.jwt_secret is None


@pytest.mark.parametrize("environment", ["development", "test"])
@pytest.mark.parametrize("placeholder", sorted(PLACEHOLDER_SECRETS | {FORMERLY_PUBLIC_SECRET}))
def test_well_known_secrets_are_refused_in_every_environment(
    monkeypatch: pytest.MonkeyPatch, environment: str, placeholder: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.setenv("JWT_SECRET", placeholder)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "JWT_SECRET" in str(info.value)


def test_env_example_configures_no_secret() -> None:
    """A copied `.env.example` must not configure a secret anyone can read."""
    example = Path(__file__).resolve().parents[1] / ".env.example"
    loaded = Settings(_env_file=example)  # type: ignore[call-arg]
    assert loaded.jwt_secret is None
    assert loaded.jwks_url is None


def test_empty_secret_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", "   ")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "JWT_SECRET" in str(info.value)


def test_development_accepts_short_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("JWT_SECRET", "short")
    loaded = Settings(_env_file=None)
    assert loaded.jwt_secret is not None
    assert loaded.jwt_secret.get_secret_value() == "short"


# --- CORS_ORIGINS parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["http://localhost:3000"]', ["http://localhost:3000"]),
        (
            '["http://localhost:3000", "https://app.example.com"]',
            ["http://localhost:3000", "https://app.example.com"],
        ),
        (
            "http://localhost:3000,https://app.example.com",
            ["http://localhost:3000", "https://app.example.com"],
        ),
        (
            " http://localhost:3000 , https://app.example.com ,",
            ["http://localhost:3000", "https://app.example.com"],
        ),
        ("http://localhost:3000", ["http://localhost:3000"]),
    ],
    ids=["json-one", "json-two", "comma", "comma-spaces", "single"],
)
def test_cors_origins_json_array_or_comma_list(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", raw)
    assert Settings(_env_file=None).cors_origins == expected


def test_cors_origins_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).cors_origins == ["http://localhost:3000"]


@pytest.mark.parametrize(
    "raw", ['["http://localhost:3000"', "[http://localhost:3000]", "['http://localhost:3000']"]
)
def test_invalid_cors_json_is_readable_config_error(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", raw)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "CORS_ORIGINS" in text
    assert "JSON" in text
    assert "Traceback" not in text


def test_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "not-a-number")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "MAX_BODY_BYTES" in str(info.value)


# --- DATABASE_URL -------------------------------------------------------------------------


def _resolve(url: str | None, **overrides: Any) -> Any:
    return resolve_database_url(make_settings(url, **overrides))


def test_unset_database_url_is_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "tasks.db"
    resolved = _resolve(None, sqlite_path=str(path))
    assert resolved.is_sqlite
    assert resolved.url.drivername == "sqlite+aiosqlite"
    assert resolved.url.database == str(path.resolve())
    assert resolved.connect_args == {}


def test_unset_database_url_default_path_is_absolute(tmp_path: Path) -> None:
    resolved = _resolve(None)
    assert resolved.url.drivername == "sqlite+aiosqlite"
    assert Path(resolved.url.database).is_absolute()
    assert resolved.url.database == str((tmp_path / "taskapi.db").resolve())


def test_neon_url_is_translated_for_asyncpg() -> None:
    neon = "postgresql://u:p@ep-x.neon.tech/db?sslmode=require&channel_binding=require"
    resolved = _resolve(neon)
    assert not resolved.is_sqlite
    assert resolved.url.drivername == "postgresql+asyncpg"
    assert resolved.url.host == "ep-x.neon.tech"
    assert resolved.url.username == "u"
    assert resolved.url.password == "p"
    assert resolved.url.database == "db"
    assert resolved.connect_args["ssl"] == "require"
    assert "channel_binding" not in resolved.url.query
    assert "sslmode" not in resolved.url.query
    rendered = resolved.url.render_as_string(hide_password=False)
    assert "channel_binding" not in rendered
    assert "sslmode" not in rendered
    assert "channel_binding" not in resolved.connect_args
    # A direct (non-pooler) endpoint keeps prepared statements.
    assert "statement_cache_size" not in resolved.connect_args
    assert "prepared_statement_cache_size" not in resolved.url.query


def test_postgres_scheme_is_accepted() -> None:
    resolved = _resolve("postgres://u:p@db.example.com:5433/app?sslmode=require")
    assert resolved.url.drivername == "postgresql+asyncpg"
    assert resolved.url.port == 5433
    assert resolved.connect_args["ssl"] == "require"


def test_pooler_host_disables_prepared_statement_caches() -> None:
    resolved = _resolve(
        "postgresql://u:p@ep-x-pooler.us-east-2.aws.neon.tech/db?sslmode=require"
        "&channel_binding=require"
    )
    assert resolved.behind_transaction_pooler is True
    assert resolved.connect_args["statement_cache_size"] == 0
    assert resolved.connect_args["ssl"] == "require"
    assert "channel_binding" not in resolved.url.query


def test_sslmode_disable_turns_tls_off() -> None:
    resolved = _resolve("postgresql://u:p@localhost/db?sslmode=disable")
    assert resolved.connect_args["ssl"] is False


def test_sslmode_defaults_to_prefer() -> None:
    resolved = _resolve("postgresql://u:p@localhost/db")
    assert resolved.connect_args["ssl"] == "prefer"


@pytest.mark.parametrize(
    "url", ["mysql://u:p@localhost/db", "mysql+aiomysql://u:p@localhost/db", "mongodb://x/db"]
)
def test_unsupported_scheme_is_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        _resolve(url)
    assert "DATABASE_URL" in str(info.value)


def test_invalid_sslmode_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        _resolve("postgresql://u:p@localhost/db?sslmode=sometimes")
    assert "sslmode" in str(info.value)


# --- process-level refusals ----------------------------------------------------------------


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ENV_VARS}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def test_import_main_in_production_without_secret_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, "-c", "import main"],
        cwd=tmp_path,
        env=_subprocess_env(ENVIRONMENT="production"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "JWT_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_main_without_any_key_exits_2(tmp_path: Path) -> None:
    """`uvicorn main:app` with nothing configured (ENVIRONMENT unset) refuses to start."""
    result = subprocess.run(
        [PYTHON, "-c", "import main"],
        cwd=tmp_path,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "JWT_SECRET" in result.stderr
    assert "JWKS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_main_in_production_with_wildcard_cors_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, "-c", "import main"],
        cwd=tmp_path,
        env=_subprocess_env(ENVIRONMENT="production", JWT_SECRET=GOOD_SECRET, CORS_ORIGINS='["*"]'),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "CORS_ORIGINS" in result.stderr


def _devtoken(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "taskapi.devtoken", *args],
        cwd=tmp_path,
        env=_subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_devtoken_prints_token_signed_with_configured_secret(tmp_path: Path) -> None:
    result = _devtoken(tmp_path, "alice", ENVIRONMENT="development", JWT_SECRET=GOOD_SECRET)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = jwt.decode(token, GOOD_SECRET, algorithms=["HS256"], options={"require": ["exp"]})
    assert claims["sub"] == "alice"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, FORMERLY_PUBLIC_SECRET, algorithms=["HS256"])


def test_devtoken_without_secret_says_how_to_get_one(tmp_path: Path) -> None:
    result = _devtoken(tmp_path, "alice")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout.strip() == ""
    assert "JWT_SECRET" in result.stderr
    assert "make run" in result.stderr


# --- the development secret of `make run` ---------------------------------------------------


def _devsecret(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "taskapi.devsecret"],
        cwd=cwd,
        env=_subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _env_file_secret(directory: Path) -> str | None:
    loaded = Settings(_env_file=directory / ".env")  # type: ignore[call-arg]
    return loaded.jwt_secret.get_secret_value() if loaded.jwt_secret else None


def test_devsecret_writes_a_random_secret_once_per_checkout(tmp_path: Path) -> None:
    first, second = tmp_path / "checkout-1", tmp_path / "checkout-2"
    first.mkdir()
    second.mkdir()
    assert _devsecret(first).returncode == 0
    secret = _env_file_secret(first)
    assert secret is not None
    assert len(secret) >= 64
    assert secret not in PLACEHOLDER_SECRETS
    assert stat.S_IMODE((first / ".env").stat().st_mode) == 0o600
    # Once: a second run keeps it (tokens already issued stay valid) and says nothing.
    again = _devsecret(first)
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert _env_file_secret(first) == secret
    # Per checkout: another one gets its own.
    assert _devsecret(second).returncode == 0
    assert _env_file_secret(second) not in (None, secret)


def test_devsecret_fills_the_empty_line_of_a_copied_env_example(tmp_path: Path) -> None:
    example = (ROOT / ".env.example").read_text()
    (tmp_path / ".env").write_text(example)
    result = _devsecret(tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / ".env").read_text()
    assert sum(line.startswith("JWT_SECRET=") for line in text.splitlines()) == 1
    assert _env_file_secret(tmp_path) is not None
    assert text.replace(_env_file_secret(tmp_path) or "", "") == example


@pytest.mark.parametrize(
    ("env", "env_file"),
    [
        ({"JWT_SECRET": GOOD_SECRET}, None),
        ({}, f"JWT_SECRET={GOOD_SECRET}\n"),
        ({"JWKS_URL": "http://localhost:3000/api/auth/jwks"}, None),
        ({}, "JWKS_URL=http://localhost:3000/api/auth/jwks\n"),
    ],
    ids=["secret-in-environment", "secret-in-env-file", "jwks-in-environment", "jwks-in-env-file"],
)
def test_devsecret_leaves_a_configured_key_alone(
    tmp_path: Path, env: dict[str, str], env_file: str | None
) -> None:
    if env_file is not None:
        (tmp_path / ".env").write_text(env_file)
    result = _devsecret(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    if env_file is None:
        assert not (tmp_path / ".env").exists()
    else:
        assert (tmp_path / ".env").read_text() == env_file


def test_devsecret_refuses_in_production(tmp_path: Path) -> None:
    result = _devsecret(tmp_path, ENVIRONMENT="production")
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr
    assert not (tmp_path / ".env").exists()


def test_devtoken_refused_in_production(tmp_path: Path) -> None:
    result = _devtoken(tmp_path, "alice", ENVIRONMENT="production", JWT_SECRET=GOOD_SECRET)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout.strip() == ""
    assert "production" in result.stderr


@pytest.mark.parametrize(
    ("jwks_url", "issuer"),
    [
        ("https://auth.example.com:443/api/auth/jwks", "https://auth.example.com"),
        ("http://localhost:80/api/auth/jwks", "http://localhost"),
        ("http://localhost:3000/api/auth/jwks", "http://localhost:3000"),
        ("https://Auth.Example.com/api/auth/jwks", "https://auth.example.com"),
    ],
)
def test_default_issuer_is_better_auths_origin_without_default_port(
    jwks_url: str, issuer: str
) -> None:
    settings = Settings(_env_file=None, jwks_url=jwks_url)  # type: ignore[call-arg]
    assert settings.expected_issuer == issuer
    assert settings.expected_audience == issuer


def test_every_setting_is_documented_in_env_example() -> None:
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in example]
    assert missing == []
