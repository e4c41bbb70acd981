"""The TypeScript client (clients/typescript): its committed types are what the running
service's /openapi.json generates, and it type-checks (`tsc --noEmit`, type tests included).

Without Node.js these tests skip locally; with CI=true they fail instead (nothing may skip).
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.betterauth import PROJECT_DIR, BetterAuthUnavailableError, ensure_node_project
from tests.support.databases import ROOT

CLIENT_DIR = ROOT / "clients" / "typescript"


@pytest.fixture(scope="module")
def client_package() -> Path:
    """The client package with its node_modules installed (`npm ci` from its lockfile)."""
    try:
        ensure_node_project(CLIENT_DIR)
    except BetterAuthUnavailableError as exc:
        pytest.skip(f"the TypeScript client needs Node.js and npm: {exc}")
    return CLIENT_DIR


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    """clients/typescript/generate.py, what `make client` runs."""
    spec = importlib.util.spec_from_file_location("generate", CLIENT_DIR / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def live_types(
    client_package: Path, generator: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """What openapi-typescript makes of a running `uvicorn main:app`'s /openapi.json now."""
    output = tmp_path_factory.mktemp("client") / "schema.d.ts"
    generator.generate(output)
    return output.read_text()


def test_committed_types_match_the_live_schema(generator: ModuleType, live_types: str) -> None:
    problem = generator.difference(generator.SCHEMA_FILE.read_text(), live_types)
    assert problem is None, problem


def test_stale_types_fail_with_how_to_regenerate(generator: ModuleType, live_types: str) -> None:
    stale = live_types.replace('Priority: "low" | "medium" | "high";', 'Priority: "low" | "high";')
    assert stale != live_types
    problem = generator.difference(stale, live_types)
    assert problem is not None
    assert "run `make client` and commit clients/typescript/src/schema.d.ts" in problem
    assert '+        Priority: "low" | "medium" | "high";' in problem


def test_client_type_checks(client_package: Path) -> None:
    """`tsc --noEmit` over the wrapper and the type tests (test/types.ts), whose
    `@ts-expect-error` lines fail the check if the types stop refusing bad calls."""
    result = subprocess.run(
        [str(client_package / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p", "."],
        cwd=client_package,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_browser_test_page_type_checks(client_package: Path) -> None:
    """The browser test page (tests/betterauth/page/app.ts, which esbuild bundles without
    checking types) type-checks against Better Auth's client and the typed client."""
    try:
        ensure_node_project(PROJECT_DIR)
    except BetterAuthUnavailableError as exc:
        pytest.skip(f"the browser test page needs Node.js and npm: {exc}")
    page = PROJECT_DIR / "page"
    result = subprocess.run(
        [str(client_package / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p", str(page)],
        cwd=page,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
