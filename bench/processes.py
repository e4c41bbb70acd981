"""Child processes in their own process groups, killed at exit; what /proc says about them.

Every subprocess the runner starts (servers, py-spy) goes through `spawn`, so that `cleanup`
(at exit, on SIGTERM and on Ctrl-C) can kill its whole group: uvicorn with several workers
or a reloader leaves grandchildren that killing the child alone would orphan.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench.core import log

_PROCS: list[subprocess.Popen[bytes]] = []


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start `cmd` in a new session (its own process group), killed by `cleanup`."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _PROCS.append(proc)
    return proc


def adopt(proc: subprocess.Popen[bytes]) -> None:
    """A child started elsewhere in its own session, killed by `cleanup` too."""
    _PROCS.append(proc)


def kill_group(p: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        else:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
    if p in _PROCS:
        _PROCS.remove(p)


def cleanup() -> None:
    while _PROCS:
        kill_group(_PROCS.pop())


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    cleanup()
    sys.exit(128 + signum)


def install_cleanup() -> None:
    """Kill every spawned group at exit, on SIGTERM and on Ctrl-C."""
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- /proc ---------------------------------------------------------------


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            except OSError:
                continue
            out.extend(int(c) for c in text.split())
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    res: list[int] = []
    todo = [pid]
    while todo:
        for c in children(todo.pop()):
            res.append(c)
            todo.append(c)
    return res


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


CpuTicks = dict[int, tuple[int, str]]  # pid -> (user + system clock ticks, process name)


def cpu_ticks() -> CpuTicks:
    res = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        name = st[st.index("(") + 1 : st.rindex(")")]
        if name == "postgres" and "taskapi_bench" in cmdline(int(d)):
            continue  # a backend serving this benchmark's own servers
        f = st[st.rindex(")") + 2 :].split()
        res[int(d)] = (int(f[11]) + int(f[12]), name)
    return res


def own_pids() -> set[int]:
    """This runner and everything it started."""
    return {os.getpid(), *descendants(os.getpid())}


def foreign_cores(
    before: CpuTicks, after: CpuTicks, seconds: float, mine: set[int]
) -> list[tuple[float, int, str]]:
    """(cores, pid, name) of each process outside `mine` between two `cpu_ticks` readings."""
    hz = os.sysconf("SC_CLK_TCK")
    return [
        ((t - before[pid][0]) / hz / seconds, pid, name)
        for pid, (t, name) in after.items()
        if pid in before and pid not in mine
    ]


def check_quiet(what: str, seconds: float = 2.0, threshold: float = 0.10) -> float:
    """Warn when processes outside this benchmark use CPU (the machine has only 2 cores)."""
    mine = own_pids()
    a = cpu_ticks()
    time.sleep(seconds)
    usage = [u for u in foreign_cores(a, cpu_ticks(), seconds, mine) if u[0] > 0.005]
    total = sum(u[0] for u in usage)
    if total > threshold:
        usage.sort(reverse=True)
        top = ", ".join(f"{n}[{p}] {100 * c:.0f}%" for c, p, n in usage[:6])
        log(
            f"WARNING ({what}): other processes use {100 * total:.0f}% of a core: {top} "
            "-- numbers will be noisy"
        )
    return total
