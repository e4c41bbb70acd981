"""One wrk run: the command, its result line (printed by bench/lua/common.lua), its errors.

Each run also measures the CPU that processes outside the benchmark used meanwhile: on a
2-core machine shared with other work, that is what makes a row noisy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core import LOGS, LUA, log
from bench.processes import cpu_ticks, foreign_cores, own_pids

RESULT_RE = re.compile(r"^BENCH_RESULT (\{.*\})\s*$", re.M)
NON2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
SOCKERR_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class WrkResult:
    label: str
    rps: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    requests: int = 0
    errors: int = 0  # non-2xx + socket errors
    non2xx: int = 0
    socket_errors: int = 0
    status: dict[str, int] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    foreign_cpu: float = 0.0  # cores used by processes outside the bench during the run


def wrk(
    label: str,
    url: str,
    script: str,
    data: Path,
    duration: float,
    conns: int = 32,
    extra_env: dict[str, str] | None = None,
    quiet: bool = False,
) -> WrkResult:
    """`wrk -t1 -c<conns>` with bench/lua/<script>.lua and the tokens file `data`."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{int(max(1, duration))}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(LUA / f"{script}.lua"),
        url,
    ]
    env = {
        **os.environ,
        "BENCH_DATA": str(data),
        "BENCH_SYNC": str(data.with_name("sync.tsv")),  # see seeding.write_sync_clients
        "BENCH_COLD": str(data.with_name("cold.tsv")),  # see seeding.write_cold_tokens
        "BENCH_LUA_DIR": str(LUA),
        **(extra_env or {}),
    }
    if not quiet:
        log(f"wrk {label}: {' '.join(cmd)}")
    mine = own_pids()
    a = cpu_ticks()
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    elapsed = max(time.monotonic() - t0, 1e-3)
    foreign = sum(u[0] for u in foreign_cores(a, cpu_ticks(), elapsed, mine))
    out = p.stdout + p.stderr
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "wrk.log", "a") as f:
        f.write(f"===== {label} {' '.join(cmd)}\n{out}\n")
    m = RESULT_RE.search(out)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({p.returncode}) for {label}:\n{out[-2000:]}")
    raw = json.loads(m.group(1))
    m2 = NON2XX_RE.search(out)
    non2xx = max(int(m2.group(1)) if m2 else 0, raw.get("non2xx", 0))
    se = SOCKERR_RE.search(out)
    sock = sum(int(x) for x in se.groups()) if se else 0
    return WrkResult(
        label=label,
        rps=raw["rps"],
        p50_us=raw["p50_us"],
        p99_us=raw["p99_us"],
        requests=raw["requests"],
        non2xx=non2xx,
        socket_errors=sock,
        errors=non2xx + sock,
        status=raw.get("status", {}),
        raw=raw,
        foreign_cpu=foreign,
    )


def warm_then_measure(
    label: str, url: str, script: str, data: Path, duration: float, conns: int = 32
) -> WrkResult:
    """A quiet 2 s warm-up run, then the measured one."""
    wrk(f"warmup {label}", url, script, data, 2, conns, quiet=True)
    return wrk(label, url, script, data, duration, conns)


CONNECTIONS = (8, 32, 128, 512)


def sweep(targets: list[tuple[str, str, str]], data: Path, duration: float) -> list[WrkResult]:
    """Each (label, url, script) at each of CONNECTIONS, labelled "<label> c=<n>"."""
    return [
        wrk(f"{label} c={c}", url, script, data, duration, c)
        for c in CONNECTIONS
        for label, url, script in targets
    ]
