"""Watching the service's worker during a long mix: its RSS (--soak) and py-spy (--profile).

(Named `profiling`, not `profile`: run as `python bench/run.py`, a module of this folder
could otherwise stand in for the standard library's `profile`.)
"""

from __future__ import annotations

import collections
import csv
import re
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

from bench.core import BENCH, DATA, VENV_BIN, log
from bench.processes import kill_group, rss_mb, spawn
from bench.report import print_table
from bench.servers import Server
from bench.wrk import wrk

# ---- RSS soak ------------------------------------------------------------


def soak(service: Server, data: Path, seconds: int, interval: float) -> None:
    pids = service.worker_pids()
    log(f"soak: mix for {seconds}s, sampling VmRSS of worker pid(s) {pids} every {interval}s")
    samples: list[tuple[float, int, float]] = []
    stop = threading.Event()

    def sampler() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            for pid in pids:
                v = rss_mb(pid)
                if v is not None:
                    samples.append((time.monotonic() - t0, pid, v))
            stop.wait(interval)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    try:
        res = wrk(f"soak mix {seconds}s", service.url, "mix", data, seconds, 32)
    finally:
        stop.set()
        th.join(timeout=5)
    out = DATA / "rss.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_seconds", "pid", "rss_mb"])
        for t, pid, v in samples:
            w.writerow([f"{t:.1f}", pid, f"{v:.1f}"])
    print_table("soak (mix)", [res], None, None)
    for pid in pids:
        vals = [(t, v) for t, p, v in samples if p == pid]
        if vals:
            _print_rss(pid, vals)
    print(f"RSS samples written to {out}")


def _print_rss(pid: int, vals: list[tuple[float, float]]) -> None:
    rss = [v for _, v in vals]
    n = len(rss)
    first_q = statistics.mean(rss[: max(1, n // 4)])
    last_q = statistics.mean(rss[-max(1, n // 4) :])
    print(
        f"RSS pid {pid}: samples={n} start={rss[0]:.1f}MB min={min(rss):.1f} "
        f"max={max(rss):.1f} "
        f"end={rss[-1]:.1f}MB  mean(first 1/4)={first_q:.1f} mean(last 1/4)={last_q:.1f} "
        f"growth={last_q - first_q:+.1f}MB  -> "
        f"{'OK' if max(rss) < 150 else 'OVER 150MB'}"
        f"{'' if last_q - first_q < 0.05 * first_q + 2 else ', GROWING'}"
    )
    step = max(1, n // 20)
    print("  t(s) -> RSS(MB): " + "  ".join(f"{t:.0f}:{v:.1f}" for t, v in vals[::step]))


# ---- py-spy ----------------------------------------------------------------


def _frame_key(frame: str) -> tuple[str, str]:
    # py-spy raw frame: "func (path/to/file.py:123)"
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame, ""
    return m.group(1), m.group(2)


CATEGORIES = [
    ("asyncpg", "asyncpg"),
    ("sqlalchemy", "sqlalchemy"),
    ("pydantic", "pydantic"),
    ("fastapi", "fastapi"),
    ("starlette", "starlette"),
    ("uvicorn", "uvicorn"),
    ("httptools", "httptools"),
    ("uvloop", "uvloop"),
    ("jwt", "jwt"),
    ("orjson", "orjson"),
    ("json", "/json/"),
    ("asyncio", "asyncio"),
    ("taskapi", "taskapi"),
    ("main.py", "main.py"),
    ("bench", "bench/"),
]


def _category(path: str) -> str:
    for name, needle in CATEGORIES:
        if needle in path:
            return name
    return "other:" + Path(path).name if path else "other"


IDLE_LEAVES = {
    "Condition.wait",
    "Event.wait",
    "Queue.get",
    "Semaphore.acquire",
    "_wait_for_tstate_lock",
}


def _print_counts(title: str, counts: collections.Counter[str], most: int, total: int) -> None:
    print(title)
    for key, n in counts.most_common(most):
        print(f"{100 * n / total:6.1f}%  {key}")


def summarize_profile(raw_path: Path, top: int = 25) -> None:
    self_c: collections.Counter[str] = collections.Counter()
    incl_c: collections.Counter[str] = collections.Counter()
    cat_self: collections.Counter[str] = collections.Counter()
    cat_incl: collections.Counter[str] = collections.Counter()
    total = idle_threads = pool_busy = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, cnt = line.rpartition(" ")
        try:
            n = int(cnt)
        except ValueError:
            continue
        frames = [
            f
            for f in stack.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        if not frames:
            continue
        keys = [_frame_key(f) for f in frames]
        if frames[0].startswith("Thread._bootstrap") and keys[-1][0] in IDLE_LEAVES:
            idle_threads += n  # a pool thread parked on a lock: py-spy counts it as active
            continue
        if any("WorkerThread.run" in f for f in frames):
            pool_busy += n
        total += n
        leaf = keys[-1]
        self_c[f"{leaf[0]} ({leaf[1]})"] += n
        cat_self[_category(leaf[1])] += n
        for k in set(keys):
            incl_c[f"{k[0]} ({k[1]})"] += n
        for c in {_category(k[1]) for k in keys}:
            cat_incl[c] += n
    if not total:
        print("profile: no samples")
        return
    print(f"\n== py-spy profile: {total} samples ({raw_path})")
    print(
        f"(excluded {idle_threads} samples of background threads waiting on a lock/queue; "
        f"thread-pool workers busy in {100 * pool_busy / total:.1f}% of samples. Stacks rooted in "
        "a greenlet or a coroutine resumed by the loop are partial, so 'inclusive' undercounts "
        "outer frames: read the self-time tables first.)"
    )
    _print_counts("-- self time by library (leaf frame) --", cat_self, 15, total)
    _print_counts("-- inclusive time by library (any frame on the stack) --", cat_incl, 15, total)
    _print_counts(f"-- top {top} functions by self time --", self_c, top, total)
    _print_counts(f"-- top {top} functions by inclusive time --", incl_c, top, total)


def _py_spy(pid: int, seconds: int, out: Path, *fmt: str) -> list[str]:
    pyspy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    return [
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "250",
        *fmt,
        "-o",
        str(out),
        "--nonblocking",
    ]


def profile(service: Server, data: Path, seconds: int) -> None:
    pid = service.worker_pids()[0]
    raw = DATA / "profile.txt"
    svg = BENCH / "profile.svg"
    rec_s = max(3, seconds - 3)
    cmd = _py_spy(pid, rec_s, raw, "--format", "raw")
    log(f"profile: {' '.join(cmd)} during a {seconds}s mix run")
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    try:
        res = wrk(f"mix (under py-spy) {seconds}s", service.url, "mix", data, seconds, 32)
    finally:
        try:
            out, _ = p.communicate(timeout=rec_s + 30)
        except subprocess.TimeoutExpired:
            out = b""
        kill_group(p)
    print_table("mix under py-spy", [res], None, None)
    if p.returncode != 0 or not raw.exists():
        print(f"py-spy failed ({p.returncode}): {out.decode(errors='replace')[-1500:]}")
        return
    summarize_profile(raw)
    # Also a flame graph SVG for humans (second short recording).
    p2 = spawn(
        _py_spy(pid, min(rec_s, 10), svg),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wrk("mix (flamegraph)", service.url, "mix", data, min(rec_s, 10) + 2, 32, quiet=True)
        p2.wait(timeout=40)
    except Exception as exc:
        print(f"flamegraph recording failed: {exc}")
    finally:
        kill_group(p2)
    print(f"raw collapsed stacks: {raw} (open in https://www.speedscope.app); flame graph: {svg}")
