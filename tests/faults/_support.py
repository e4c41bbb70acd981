"""Helpers shared by the fault-injection tests (in-process app, a real uvicorn process)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from taskapi.app import ServiceApp, create_app
from taskapi.config import Settings
from taskapi.db.postgres import PostgresDatabase
from tests.support.pgcluster import free_port
from tests.support.tokens import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]
TASKS = "/api/v1/tasks"

# The bounds a request may take with the database down follow from these settings.
CONNECT_TIMEOUT = 1.0
STATEMENT_TIMEOUT = 2.0
POOL_TIMEOUT = 2.0
RETRY_AFTER = 7  # not the default (5), so the header provably comes from the settings

SHORT_TIMEOUTS: dict[str, Any] = {
    "db_connect_timeout_seconds": CONNECT_TIMEOUT,
    "db_statement_timeout_seconds": STATEMENT_TIMEOUT,
    "db_pool_timeout_seconds": POOL_TIMEOUT,
    "retry_after_seconds": RETRY_AFTER,
    "log_level": "ERROR",  # one WARNING per 503 would flood the output
}


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[ServiceApp, httpx.AsyncClient]]:
    """The app in-process (lifespan run), with a client talking ASGI to it."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=30
        ) as client:
            yield app, client


def postgres(app: ServiceApp) -> PostgresDatabase:
    """The running app's PostgreSQL backend (its connection handout)."""
    assert app.services is not None, "the app is not running"
    database = app.services.db
    assert isinstance(database, PostgresDatabase)
    return database


def assert_unavailable(response: httpx.Response) -> None:
    """The contract of a database outage: 503, SERVICE_UNAVAILABLE, Retry-After."""
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "SERVICE_UNAVAILABLE", response.text
    assert response.headers.get("retry-after") == str(RETRY_AFTER), dict(response.headers)


@dataclass
class Outcome:
    """One request as a load client saw it (times from time.perf_counter)."""

    kind: str
    status: int
    sent: float
    done: float
    code: str | None = None
    retry_after: str | None = None

    @property
    def latency(self) -> float:
        return self.done - self.sent


def record(kind: str, sent: float, response: httpx.Response) -> Outcome:
    code = None
    if response.status_code >= 400:
        with contextlib.suppress(Exception):
            code = response.json().get("code")
    return Outcome(
        kind,
        response.status_code,
        sent,
        time.perf_counter(),
        code,
        response.headers.get("retry-after"),
    )


# --------------------------------------------------------------------------
# a real service process
# --------------------------------------------------------------------------

STARTUP_LINE = "Application startup complete"


@dataclass
class ServiceProcess:
    """`uvicorn main:app` in a child process; stderr is read line by line by a thread.
    `cwd` holds the code it serves (another revision's, for a migration under load);
    `command` replaces the default command line (`{port}` is replaced by the port).
    """

    env: Mapping[str, str]
    port: int = field(default_factory=free_port)
    cwd: Path = ROOT
    command: Sequence[str] | None = None
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServiceProcess:
        """Spawn uvicorn and return once it logged that the application started."""
        uvicorn = Path(sys.executable).with_name("uvicorn")
        self.lines = []
        self._queue = queue.Queue()
        command = (
            [arg.replace("{port}", str(self.port)) for arg in self.command]
            if self.command is not None
            else [
                str(uvicorn),
                "main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--no-access-log",
                "--no-server-header",
            ]
        )
        self.proc = subprocess.Popen(
            command,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # This process's own queue and lines: after a restart, the previous process's pump
        # thread may still be draining, and its end-of-output must not reach the new queue.
        threading.Thread(
            target=self._pump, args=(self.proc, self._queue, self.lines), daemon=True
        ).start()
        self.wait_for_line(STARTUP_LINE, timeout)
        return self

    @staticmethod
    def _pump(
        proc: subprocess.Popen[str], lines_queue: queue.Queue[str | None], lines: list[str]
    ) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            lines_queue.put(line)
        lines_queue.put(None)

    def wait_for_line(self, needle: str, timeout: float = 30) -> str:
        """Block until a stderr line containing `needle` (fails on exit or timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {needle!r} from uvicorn in {timeout}s:\n{self.output()}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"uvicorn exited before {needle!r}:\n{self.output()}")
            if needle in line:
                return line

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGKILL (our own child, by pid) if still running, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


def service_env(database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "ENVIRONMENT": "test",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "CORS_ORIGINS": "http://localhost:3000",
    }
