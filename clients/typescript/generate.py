"""Generate `src/schema.d.ts` from a running service's `/openapi.json` (openapi-typescript).

    python clients/typescript/generate.py           # regenerate (what `make client` runs)
    python clients/typescript/generate.py --check   # exit 1 if the committed file differs

Starts `uvicorn main:app` on a free loopback port (SQLite in a temporary directory, the
development settings), waits for `/health`, and runs the package's own openapi-typescript on
the live schema URL. Needs Node.js and npm; runs `npm ci` here when node_modules is missing.
"""

from __future__ import annotations

import argparse
import difflib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parents[1]
SCHEMA_FILE = PACKAGE_DIR / "src" / "schema.d.ts"
REGENERATE = "make client"
STARTUP_TIMEOUT = 60.0
# A field with a default (TaskCreate.completed) stays optional in what a client sends.
OPTIONS = ("--default-non-nullable=false",)


class GenerationError(RuntimeError):
    """The service did not start, or openapi-typescript failed."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_service() -> Iterator[str]:
    """`uvicorn main:app` on a free loopback port; yields its base URL."""
    port = _free_port()
    uvicorn = Path(sys.executable).with_name("uvicorn")
    with tempfile.TemporaryDirectory(prefix="taskapi-client-") as tmp:
        env = {
            **os.environ,
            "DATABASE_URL": "",
            "SQLITE_PATH": str(Path(tmp) / "openapi.db"),
            "ENVIRONMENT": "development",
            "JWKS_URL": "",
            # A throwaway key: only /openapi.json is read, no token is ever verified.
            "JWT_SECRET": secrets.token_hex(32),
            "LOG_LEVEL": "WARNING",
        }
        log = Path(tmp) / "uvicorn.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(uvicorn), "main:app", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                if process.poll() is not None:
                    raise GenerationError(f"the service exited:\n{log.read_text()[-4000:]}")
                try:
                    if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise GenerationError(f"the service did not start:\n{log.read_text()[-4000:]}")
                time.sleep(0.1)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def ensure_node_modules() -> None:
    """`npm ci` in this package if its node_modules is missing."""
    if shutil.which("npm") is None:
        raise GenerationError("`npm` is not on PATH: install Node.js >= 20")
    if (PACKAGE_DIR / "node_modules" / ".package-lock.json").exists():
        return
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PACKAGE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise GenerationError(f"`npm ci` in {PACKAGE_DIR} failed:\n{result.stderr[-4000:]}")


def generate(output: Path) -> None:
    """Write the types of the live service's schema to `output`."""
    ensure_node_modules()
    binary = PACKAGE_DIR / "node_modules" / ".bin" / "openapi-typescript"
    with running_service() as base_url:
        result = subprocess.run(
            [str(binary), f"{base_url}/openapi.json", *OPTIONS, "--output", str(output)],
            cwd=PACKAGE_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise GenerationError(f"openapi-typescript failed:\n{result.stdout}{result.stderr}")


def difference(committed: str, expected: str) -> str | None:
    """None if the committed types are the expected ones; otherwise what to do, and the diff."""
    if committed == expected:
        return None
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            "committed/src/schema.d.ts",
            "live-openapi/src/schema.d.ts",
        )
    )
    relative = SCHEMA_FILE.relative_to(ROOT)
    return (
        f"{relative} differs from what the running service's /openapi.json generates: "
        f"run `{REGENERATE}` and commit {relative}.\n{diff[:8000]}"
    )


def check() -> str | None:
    """None if the committed types are current; otherwise what to do, and the diff."""
    with tempfile.TemporaryDirectory(prefix="taskapi-client-") as tmp:
        fresh = Path(tmp) / "schema.d.ts"
        generate(fresh)
        expected = fresh.read_text()
    return difference(SCHEMA_FILE.read_text() if SCHEMA_FILE.exists() else "", expected)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed file differs")
    args = parser.parse_args()
    try:
        if args.check:
            problem = check()
            if problem:
                print(problem, file=sys.stderr)
                return 1
            print(f"{SCHEMA_FILE.relative_to(ROOT)} is current")
            return 0
        generate(SCHEMA_FILE)
    except GenerationError as error:
        print(f"generate.py: {error}", file=sys.stderr)
        return 2
    print(f"wrote {SCHEMA_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
