"""Paths, constants and the log line that every part of the runner shares."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# BENCH_DATA_DIR: another directory for the run's files (tokens, logs), so that two runs
# (on two --db databases) do not share them.
DATA = Path(os.environ.get("BENCH_DATA_DIR") or BENCH / ".data")
LOGS = DATA / "logs"
LUA = BENCH / "lua"
VENV_BIN = Path(sys.executable).parent

JWT_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"  # >= 32 chars, bench only
# The scrape token of a service run with METRICS_ENABLED=true (and no METRICS_TOKEN or
# METRICS_PORT of its own): production refuses shorter ones. Bench only.
METRICS_TOKEN = "bench-metrics-0123456789abcdef0123456789abcdef"
API = "/api/v1/tasks"
LISTS = "/api/v1/lists"
# The production command's HTTP protocol (README "Deploy"), for every server alike: its one
# write per response lowers the ceilings as much as the service's cost.
HTTP_PROTOCOL = "taskapi.server:HttpToolsProtocol"
SERVER_FLAGS = ["--loop", "uvloop", "--http", HTTP_PROTOCOL, "--no-access-log"]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
