"""A real `uvicorn` process for a test: every line it writes (stdout and stderr) kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tests.support.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[2]


class Uvicorn:
    """`uvicorn <app> --host 127.0.0.1 --port <free> <args>` in the repository, with `env`
    added to this process's environment. A context manager: stopped (SIGTERM, then SIGKILL)
    on exit."""

    def __init__(self, app: str, env: dict[str, str], args: Sequence[str] = ()) -> None:
        self.app = app
        self.env = env
        self.args = list(args)
        self.port = free_port()
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._pumps: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Uvicorn:
        uvicorn = Path(sys.executable).with_name("uvicorn")
        command = [str(uvicorn), self.app, "--host", "127.0.0.1", "--port", str(self.port)]
        self._proc = subprocess.Popen(
            [*command, *self.args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        for stream in (self._proc.stdout, self._proc.stderr):
            pump = threading.Thread(target=self._pump, args=(stream,), daemon=True)
            pump.start()
            self._pumps.append(pump)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _exited(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def wait_for(self, needle: str, count: int = 1, timeout: float = 60) -> None:
        """Block until `count` lines contain `needle` (fails if the process exits first)."""
        deadline = time.monotonic() + timeout

        def seen() -> int:
            return sum(needle in line for line in self.lines)

        with self._changed:
            while seen() < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._exited():
                    break
                self._changed.wait(min(remaining, 1.0))
            found = seen()
        assert found >= count, f"{found} of {count} {needle!r} lines:\n" + "\n".join(self.lines)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful: lifespans end, logs are flushed), SIGKILL if it hangs; then
        every line it wrote has been read. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        for pump in self._pumps:
            pump.join(timeout)
        return proc.returncode
