"""Instructions per served GET: the whole worker (uvicorn, httptools, the app, asyncpg) under
callgrind, a count that does not move with the machine's load.

On a shared or throttled machine `make bench`'s req/s move by 10-40% from one run to the
next, more than most changes; an instruction count moves by well under 1%. This starts the
service (`main:app`, one worker, the bench's flags and environment) under
`valgrind --tool=callgrind` twice, sends every user of the last `make bench` run one GET (so
each token is verified and each user provisioned before counting), then `--requests / 5`
GETs the first time and `--requests` the second, over `--connections` keep-alive
connections in a fixed random order, and prints (I2 - I1) / (N2 - N1): what one more GET
costs, start-up and shutdown cancelled out.

    make bench BENCH_ARGS="--quick --workloads get_by_id"   # seeds taskapi_bench, tokens.tsv
    .venv/bin/python bench/instructions.py                  # needs valgrind
    .venv/bin/python bench/instructions.py --env ACCESS_LOG=false
    .venv/bin/python bench/instructions.py --keep /tmp/cg   # then callgrind_annotate
    BENCH_DATA_DIR=../old/bench/.data .venv/bin/python bench/instructions.py \
        --src ../old --db taskapi_bench_old --http httptools  # an older checkout

It counts the worker's instructions only: PostgreSQL's work per statement is not in it
(pgbench measures that; see bench/README.md). Under callgrind the worker runs ~50x slower,
so few requests are ever in flight together: the access log writes more often than under
wrk's load, and this overstates its cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.core import DATA, HTTP_PROTOCOL, SERVER_FLAGS  # noqa: E402
from bench.servers import base_env  # noqa: E402

User = tuple[str, list[str]]


def _users(path: Path) -> list[User]:
    """(token, task ids) of every user of a `make bench` run's tokens.tsv."""
    users: list[User] = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2]:
            users.append((parts[1], parts[2].split(",")))
    if not users:
        raise SystemExit(f"no users in {path}: run `make bench` first")
    return users


def _get(token: str, task_id: str) -> bytes:
    return (
        f"GET /api/v1/tasks/{task_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


async def _send(port: int, requests: list[bytes], statuses: dict[int, int]) -> None:
    """Send `requests` one after another on one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for request in requests:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        statuses[status] = statuses.get(status, 0) + 1
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        await reader.readexactly(int(match[1]) if match else 0)
    writer.close()
    await writer.wait_closed()


async def _load(port: int, requests: list[bytes], connections: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    shares = [requests[index::connections] for index in range(connections)]
    await asyncio.gather(*[_send(port, share, statuses) for share in shares if share])
    return statuses


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):  # start-up under callgrind takes a while
        if process.poll() is not None:
            raise SystemExit(f"the service exited ({process.returncode}) before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the service did not become ready")


def _count(
    requests: int, users: list[User], opts: argparse.Namespace, env: dict[str, str], out: Path
) -> int:
    """The worker's instructions over its whole life, serving the warm-up and `requests`."""
    port = _free_port()
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "uvicorn",
        opts.app,
        *_server_flags(opts.http),
        "--workers",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log = out.with_suffix(".log")
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=opts.src, env=env, stdout=sink, stderr=sink)
    try:
        _wait_ready(port, process)
        rng = random.Random(7)
        warm = [_get(token, ids[0]) for token, ids in users]
        warm += [_get(*_pick(users, rng)) for _ in range(200)]
        asyncio.run(_load(port, warm, 4))
        measured = [_get(*_pick(users, rng)) for _ in range(requests)]
        statuses = asyncio.run(_load(port, measured, opts.connections))
        if set(statuses) != {200}:
            raise SystemExit(f"not every GET answered 200: {statuses} (see {log})")
    finally:
        process.terminate()
        process.wait(timeout=120)
    found = re.search(r"Collected : (\d+)", log.read_text())
    if found is None:
        raise SystemExit(f"callgrind reported no count (see {log})")
    return int(found[1])


def _server_flags(http: str) -> list[str]:
    """The bench's flags for every server (`SERVER_FLAGS`), with `--http` set to `http`."""
    flags = list(SERVER_FLAGS)
    flags[flags.index("--http") + 1] = http
    return flags


def _pick(users: list[User], rng: random.Random) -> tuple[str, str]:
    token, ids = users[rng.randrange(len(users))]
    return token, ids[rng.randrange(len(ids))]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="GETs of the second, longer run")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--app", default="main:app")
    ap.add_argument(
        "--http",
        default=HTTP_PROTOCOL,
        help="uvicorn's --http (httptools for a checkout older than taskapi/server.py)",
    )
    ap.add_argument(
        "--src",
        type=Path,
        default=ROOT,
        help="the checkout whose service to count (another version, for an A/B)",
    )
    ap.add_argument("--db", default="taskapi_bench", help="the seeded bench database")
    ap.add_argument(
        "--pg-url", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    )
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="leave both profiles (short.out, long.out) in DIR for callgrind_annotate",
    )
    opts = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind: apt-get install valgrind")
    users = _users(DATA / "tokens.tsv")
    env = {**os.environ, **base_env(f"{opts.pg_url.rstrip('/')}/{opts.db}")}
    for pair in opts.env:
        key, _, value = pair.partition("=")
        env[key] = value
    short, long = max(1, opts.requests // 5), opts.requests
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as scratch:
        directory = opts.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        first = _count(short, users, opts, env, directory / "short.out")
        second = _count(long, users, opts, env, directory / "long.out")
    per_get = (second - first) / (long - short)
    extra = " ".join(opts.env) or "defaults"
    print(
        f"instructions per served GET: {per_get:,.0f} ({opts.app}, {extra}; "
        f"{long - short} GETs over {opts.connections} connections, {len(users)} users warm)"
    )


if __name__ == "__main__":
    main()
