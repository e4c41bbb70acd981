"""HTTP over raw sockets: byte-exact requests, slow clients, and the commands that start the
service (the README's production command, `make run`)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader) -> RawResponse | None:
    """One response (Content-Length framed, as the service frames every answer); None if the
    server closed without answering."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise AssertionError(f"incomplete response head: {error.partial[:300]!r}") from None
    except ConnectionResetError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    length = int(dict(headers).get("content-length", "0"))
    body = await reader.readexactly(length)
    return RawResponse(status, headers, body)


async def exchange(port: int, data: bytes, within: float = 10) -> tuple[RawResponse | None, bool]:
    """Send `data` as one write, read one response; also whether the server then closed."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        await writer.drain()
        response = await asyncio.wait_for(read_response(reader), within)
        try:
            rest = await asyncio.wait_for(reader.read(1), within)
        except ConnectionResetError:
            rest = b""
        return response, rest == b""
    finally:
        writer.close()


async def wait_closed(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """Read until the server closes (EOF or reset); what it sent, and when (monotonic)."""
    received = b""

    async def drain() -> None:
        nonlocal received
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass

    await asyncio.wait_for(drain(), within)
    return received, time.monotonic()


def parse_response(data: bytes) -> RawResponse | None:
    """A response already read in full (as `wait_closed` returns it); None for no bytes."""
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return RawResponse(int(lines[0].split(" ")[1]), headers, body)


# --------------------------------------------------------------------------
# the commands the project documents
# --------------------------------------------------------------------------


def readme_production_command(port: int, workers: int = 1) -> list[str]:
    """The README's production `uvicorn` command (Deployment), on 127.0.0.1:`port`."""
    readme = (ROOT / "README.md").read_text()
    deployment = readme.split("## Deployment", 1)[1].replace("\\\n", " ")
    line = next(
        line.strip()
        for line in deployment.splitlines()
        if line.strip().startswith("uvicorn main:app")
    )
    args = shlex.split(line, comments=True)
    replace = {"--host": HOST, "--port": str(port), "--workers": str(workers)}
    for index, arg in enumerate(args[:-1]):
        if arg in replace:
            args[index + 1] = replace[arg]
    return [str(Path(sys.executable).with_name("uvicorn")), *args[1:]]


def make_run_uvicorn_args() -> list[str]:
    """The arguments `make run` gives uvicorn (from `make -n run`, which runs nothing)."""
    result = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    line = next(line for line in result.stdout.splitlines() if re.search(r"uvicorn main:app", line))
    return shlex.split(line)[1:]


# --------------------------------------------------------------------------
# a process's memory and sockets (Linux /proc)
# --------------------------------------------------------------------------


def reset_peak_rss(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def open_sockets(pid: int) -> int:
    """How many sockets the process holds open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if fd.readlink().name.startswith("socket:"):
                count += 1
        except FileNotFoundError:
            continue
    return count
