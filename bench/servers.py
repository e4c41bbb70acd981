"""The servers under test: one uvicorn command line for all, their environment, readiness."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.core import JWT_SECRET, LOGS, ROOT, SERVER_FLAGS, VENV_BIN, log
from bench.options import Options
from bench.processes import children, cmdline, descendants, free_port, kill_group, spawn


def server_env(opts: Options, db: str) -> dict[str, str]:
    return {
        "DATABASE_URL": opts.server_database_url(db),
        # the ceilings and the floor send unnamed statements behind a pooler, as the service
        "BENCH_POOLER": "1" if opts.pooler else "",
        "JWT_SECRET": JWT_SECRET,
        "JWT_ALGORITHM": "HS256",
        "ENVIRONMENT": "production",
        "CORS_ORIGINS": '["http://localhost:3000"]',
        # Every feature on: rate limiting runs on every request, with limits the
        # benchmark's few users never reach.
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_PER_MINUTE": "100000000",
        "RATE_LIMIT_BURST": "10000000",
        "PYTHONUNBUFFERED": "1",
        **dict(opts.env),
    }


def uvicorn_command(app: str, workers: int, port: str) -> list[str]:
    """The command line of every server (the production command's default with 2 workers)."""
    return [
        str(VENV_BIN / "uvicorn"),
        app,
        *SERVER_FLAGS,
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        port,
    ]


@dataclass
class Server:
    name: str
    app: str
    env: dict[str, str]
    workers: int = 1
    extra_cmd: list[str] | None = None  # full command override (production command)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    logfile: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.extra_cmd:
            return [c.replace("{port}", str(self.port)) for c in self.extra_cmd]
        return uvicorn_command(self.app, self.workers, str(self.port))

    def start(self) -> None:
        self.port = free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        self.logfile = LOGS / f"{self.name}.log"
        fh = open(self.logfile, "wb")  # noqa: SIM115 - handed to the child, closed at exit
        cmd = self.command()
        log(f"start {self.name}: {' '.join(cmd)}")
        self.proc = spawn(
            cmd,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, attempts: int = 150, interval: float = 0.2) -> None:
        for _ in range(attempts):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; log tail:\n{self.log_tail()}"
                )
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    # with several workers, give the others a moment too
                    if self.workers > 1 or self.extra_cmd:
                        time.sleep(1.5)
                    return
            except OSError:
                pass
            time.sleep(interval)
        raise RuntimeError(
            f"{self.name} not ready after {attempts} attempts; log tail:\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 30) -> str:
        try:
            assert self.logfile is not None
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def worker_pids(self) -> list[int]:
        """Python processes that serve requests (uvicorn with 1 worker serves in-process)."""
        if self.proc is None:
            return []
        desc = [
            p
            for p in descendants(self.proc.pid)
            if "python" in cmdline(p) or "uvicorn" in cmdline(p) or "granian" in cmdline(p)
        ]
        # multiprocess: leaves are the workers; skip multiprocessing resource tracker
        desc = [
            p
            for p in desc
            if "resource_tracker" not in cmdline(p) and "semaphore_tracker" not in cmdline(p)
        ]
        leaves = [p for p in desc if not children(p)]
        return leaves or [self.proc.pid]

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)


def start_all(*servers: Server) -> None:
    """Start the servers together, then wait until each answers /health."""
    for s in servers:
        s.start()
    for s in servers:
        s.wait_ready()
