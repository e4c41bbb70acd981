"""The servers under test: one uvicorn command line for all, their environment, readiness."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.core import DATA, JWT_SECRET, LOGS, METRICS_TOKEN, ROOT, SERVER_FLAGS, VENV_BIN, log
from bench.options import Options
from bench.processes import children, cmdline, descendants, free_port, kill_group, spawn


def base_env(database_url: str, pooler: bool = False) -> dict[str, str]:
    """Every server's environment: the database, the bench's secret, production settings."""
    return {
        "DATABASE_URL": database_url,
        # the ceilings and the floor send unnamed statements behind a pooler, as the service
        "BENCH_POOLER": "1" if pooler else "",
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
    }


def server_env(opts: Options, db: str) -> dict[str, str]:
    return {**base_env(opts.server_database_url(db), opts.pooler), **dict(opts.env)}


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    """A boolean setting as the service reads it (pydantic's words for true)."""
    value = env.get(name)
    return default if value is None or not value.strip() else value.strip().lower() in _TRUE


def metrics_enabled(env: dict[str, str]) -> bool:
    return _flag(env, "METRICS_ENABLED", False)


def observability(env: dict[str, str]) -> str:
    """What the service writes and counts with `env`: its log format, access log, metrics."""
    production = env.get("ENVIRONMENT", "development").lower() in ("production", "staging")
    log_format = env.get("LOG_FORMAT") or ("json" if production else "text")
    level = env.get("LOG_LEVEL", "INFO").upper()
    access = _flag(env, "ACCESS_LOG", True) and level in ("DEBUG", "INFO", "NOTSET")
    if metrics_enabled(env):
        where = f"port {env['METRICS_PORT']}" if env.get("METRICS_PORT") else "/metrics"
        multiprocess = env.get("PROMETHEUS_MULTIPROC_DIR") or "a fresh directory per server start"
        metrics = f"on ({where}; PROMETHEUS_MULTIPROC_DIR {multiprocess})"
    else:
        metrics = "off"
    return (
        f"logs {log_format} (LOG_LEVEL {level}), access log {'on' if access else 'off'}, "
        f"metrics {metrics}"
    )


def _with_metrics(name: str, env: dict[str, str]) -> dict[str, str]:
    """With METRICS_ENABLED=true: the bench's METRICS_TOKEN unless a token or port is given
    (the service refuses to start without one), and PROMETHEUS_MULTIPROC_DIR unless given: a
    new empty directory for each start of each server, so that the metrics run in
    prometheus-client's multiprocess mode, as in production with several workers (values in
    memory-mapped files), and no run counts another's."""
    if not metrics_enabled(env):
        return env
    env = dict(env)
    if not env.get("METRICS_TOKEN") and not env.get("METRICS_PORT"):
        env["METRICS_TOKEN"] = METRICS_TOKEN
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        directory = DATA / "metrics" / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return env


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
            env={**os.environ, **_with_metrics(self.name, self.env)},
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

    def scrape_requests(self) -> float | None:
        """The sum of `taskapi_http_requests_total` in a scrape of its /metrics (METRICS_TOKEN
        on its own port), or None if metrics are off or the scrape fails."""
        if not metrics_enabled(self.env) or self.env.get("METRICS_PORT"):
            return None
        token = self.env.get("METRICS_TOKEN") or METRICS_TOKEN
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            c.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
            r = c.getresponse()
            text = r.read().decode()
            c.close()
        except OSError:
            return None
        if r.status != 200:
            return None
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("taskapi_http_requests_total{")
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
