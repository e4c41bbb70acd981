"""Users and tasks for the workloads, and the tokens file the Lua scripts read.

The tokens file (bench/lua/common.lua reads it) has one user a line:
``user_id \\t HS256 token \\t id,id,... \\t list id`` (the ids of the tasks that user owns,
and the user's list, when it has one).

The seeded tasks are spread so that each screen of a task app (the screen workloads) finds
some: a third are in the user's list, a quarter are due in the past (overdue) and a quarter
in January 2031, a fifth are labelled "errands", and every title opens with one of
`SEARCH_WORDS` (a search for one finds an eighth).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from pathlib import Path

from bench.core import API, JWT_SECRET, LISTS, log
from bench.database import execute_bulk, fetch, task_insert
from bench.servers import Server

Statuses = collections.Counter[int | str]
SEARCH_WORDS = (
    "invoice",
    "groceries",
    "dentist",
    "report",
    "garden",
    "taxes",
    "birthday",
    "meeting",
)


def seed_task(k: int, uid: str, list_id: int | None) -> dict[str, object]:
    """The body of a user's `k`-th seeded task (the spread the screens need)."""
    due: str | None = None
    if k % 2 == 0:
        due = f"2031-01-{1 + k % 28:02d}T09:00:00Z"
        if k % 4 == 0:
            due = f"2025-{1 + k % 12:02d}-{1 + k % 28:02d}T09:00:00Z"  # overdue
    return {
        "title": f"{SEARCH_WORDS[k % len(SEARCH_WORDS)]}: seed task {k} of {uid}",
        "description": None if k % 3 == 0 else f"seeded description {k}",
        "priority": ["low", "medium", "high", None][k % 4],
        "due_date": due,
        "list_id": list_id if k % 3 == 1 else None,
        "labels": ["errands"] if k % 5 == 0 else ["home"] if k % 5 == 1 else [],
    }


def make_token(uid: str, ttl: int = 6 * 3600, issued: int | None = None) -> str:
    import jwt

    now = int(time.time()) if issued is None else issued
    return jwt.encode(
        {
            "sub": uid,
            "email": f"{uid}@bench.example",
            "name": f"Bench {uid}",
            "iat": now,
            "exp": now + ttl,
        },
        JWT_SECRET,
        algorithm="HS256",
    )


def write_cold_tokens(path: Path, users: dict[str, list[int]], count: int) -> None:
    """The cold workloads' requests (BENCH_COLD, bench/lua/common.lua), each token used
    once: `count` tokens the service has not seen for the seeded users (as Better Auth
    issues a new JWT every 15 minutes; here each with its own `iat`) with one of the
    user's ids, then `count` tokens of users it has never seen (their first request
    provisions them), without an id."""
    import random

    known = [u for u, ids in users.items() if ids]
    base = int(time.time()) - 3600
    with open(path, "w") as f:
        for n in range(count):
            uid = random.choice(known)
            token = make_token(uid, ttl=12 * 3600, issued=base - n)
            f.write(f"{token}\t{random.choice(users[uid])}\n")
        for n in range(count):
            f.write(f"{make_token(f'bench-new-user-{n:07d}-{base}', ttl=12 * 3600)}\t\n")
    log(f"cold requests: {count} unseen tokens of known users, {count} new users")


def write_tokens(
    path: Path,
    users: dict[str, list[int]],
    tokens: dict[str, str] | None = None,
    lists: dict[str, int] | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for uid, ids in users.items():
            tok = tokens[uid] if tokens else make_token(uid)
            list_id = (lists or {}).get(uid)
            f.write(f"{uid}\t{tok}\t{','.join(map(str, ids))}\t{list_id or ''}\n")


def tokens_from_db(url: str, path: Path, query: str) -> int:
    """Write a tokens file for the rows (user_id, ids[, list_id]) of `query`; returns how
    many users."""
    rows = fetch(url, query)
    lists = {r["user_id"]: r["list_id"] for r in rows if r.get("list_id")}
    write_tokens(path, {r["user_id"]: list(r["ids"]) for r in rows}, lists=lists)
    return len(rows)


class RawClient:
    """Minimal HTTP/1.1 keep-alive client (Content-Length and chunked bodies) for seeding.

    httpx's client CPU per request slows seeding and takes the server's CPU on a 2-core
    machine; this costs a fraction of it (figures: bench/README.md, "What a run does")."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            if self.reader is None or self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            head = [
                f"{method} {path} HTTP/1.1",
                f"Host: 127.0.0.1:{self.port}",
                f"Content-Length: {len(body)}",
            ]
            head += [f"{k}: {v}" for k, v in headers.items()]
            try:
                self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                status, hdrs, data = await self._response(self.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close()
                if attempt:
                    raise
                continue
            if hdrs.get("connection", "").lower() == "close":
                self.close()
            return status, hdrs, data
        raise RuntimeError("unreachable")

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        if hdrs.get("transfer-encoding", "").lower() != "chunked":
            return status, hdrs, await reader.readexactly(int(hdrs.get("content-length", "0")))
        data = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, hdrs, data
            data += chunk[:-2]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = None
        self.writer = None


async def _seed_lists(
    port: int, tokens: dict[str, str], concurrency: int, statuses: Statuses
) -> dict[str, int]:
    """One list ("Errands") per user: its id."""
    lists: dict[str, int] = {}
    it = iter(tokens.items())

    async def worker() -> None:
        client = RawClient(port)
        try:
            for uid, token in it:
                hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                st, _, data = await client.request("POST", LISTS, hdr, b'{"name": "Errands"}')
                statuses[f"POST list {st}"] += 1
                if st == 201:
                    lists[uid] = int(json.loads(data)["id"])
        finally:
            client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lists


async def _seed(
    port: int, n_users: int, per_user: int, concurrency: int, deadline: float
) -> tuple[dict[str, list[int]], dict[str, str], dict[str, int], Statuses]:
    users: dict[str, list[int]] = {f"bench-user-{i:06d}": [] for i in range(n_users)}
    tokens = {u: make_token(u) for u in users}
    statuses: Statuses = collections.Counter()
    lists = await _seed_lists(port, tokens, concurrency, statuses)
    jobs = [(u, k) for k in range(per_user) for u in users]  # round-robin over users
    it = iter(jobs)
    first_error: list[str] = []

    async def worker() -> None:
        client = RawClient(port)
        try:
            for uid, k in it:
                if time.monotonic() > deadline:
                    return
                body = seed_task(k, uid, lists.get(uid))
                hdr = {"Authorization": f"Bearer {tokens[uid]}", "Content-Type": "application/json"}
                st, _, data = await client.request("POST", API, hdr, json.dumps(body).encode())
                statuses[st] += 1
                if st == 201:
                    users[uid].append(int(json.loads(data)["id"]))
                    # some tasks completed so that completed=true/false filters both match
                    if k % 4 == 1:
                        st2, _, d2 = await client.request(
                            "PUT", f"{API}/{users[uid][-1]}", hdr, b'{"completed": true}'
                        )
                        statuses[f"PUT {st2}"] += 1
                        if st2 != 200 and not first_error:
                            first_error.append(f"PUT {API}/id -> {st2}: {d2[:300]!r}")
                elif not first_error:
                    first_error.append(f"POST {API} -> {st}: {data[:300]!r}")
        finally:
            client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if first_error:
        log("seed: first error: " + first_error[0])
    return users, tokens, lists, statuses


def seed_via_api(
    server: Server, n_users: int, per_user: int, max_seconds: float
) -> tuple[dict[str, list[int]], dict[str, str], dict[str, int]]:
    """A list for each of `n_users` users, and `per_user` tasks each (`seed_task`; a
    quarter then completed with PUT); returns each user's task ids, token and list id."""
    log(
        f"seeding {n_users} users x {per_user} tasks through {server.name} "
        f"({n_users * per_user} POSTs)"
    )
    t0 = time.monotonic()
    users, tokens, lists, statuses = asyncio.run(
        _seed(server.port, n_users, per_user, 16, time.monotonic() + max_seconds)
    )
    dt = time.monotonic() - t0
    total = sum(len(v) for v in users.values())
    log(f"seeded {total} tasks in {dt:.1f}s ({total / dt:.0f}/s); statuses {dict(statuses)}")
    if total == 0:
        raise SystemExit(f"seeding failed; service log tail:\n{server.log_tail()}")
    return users, tokens, lists


def seed_via_sql(url: str, tokens: Path, n_users: int, per_user: int) -> int:
    """--ceilings-only: users and tasks inserted by SQL (no service); returns the task count."""
    n_tasks = n_users * per_user
    execute_bulk(
        url,
        [
            f"""INSERT INTO users (id, email, name, created_at, updated_at)
                SELECT 'bench-user-' || lpad(g::text, 6, '0'), NULL, NULL, now(), now()
                FROM generate_series(0, {n_users - 1}) g""",
            task_insert(1, n_tasks, f"'bench-user-' || lpad((g % {n_users})::text, 6, '0')"),
            "VACUUM ANALYZE tasks",
        ],
    )
    tokens_from_db(url, tokens, "SELECT user_id, array_agg(id) AS ids FROM tasks GROUP BY user_id")
    return n_tasks


async def _first_syncs(port: int, tokens: dict[str, str]) -> dict[str, str]:
    """Each user's first full sync through the service: its `next` sync token."""
    client = RawClient(port)
    found: dict[str, str] = {}
    try:
        for uid, token in tokens.items():
            hdr = {"Authorization": f"Bearer {token}"}
            status, _, body = await client.request("GET", f"{API}/changes?limit=500", hdr, b"")
            if status == 200:
                found[uid] = json.loads(body)["next"]
    finally:
        client.close()
    return found


def write_sync_clients(server: Server, tokens: dict[str, str], db_url: str, path: Path) -> None:
    """The sync workloads' clients (bench/lua/common.lua, BENCH_SYNC): per user its token,
    the sync token of a first full sync, and its tasks' ids with their current versions
    (the ETags a client that synced holds)."""
    since = asyncio.run(_first_syncs(server.port, tokens))
    # the runner's own user ids (bench-user-..., scale-u-...): safe to quote as they are
    owners = ",".join(f"'{uid}'" for uid in since) or "''"
    rows = fetch(
        db_url,
        "SELECT user_id, string_agg(id || ':' || version, ',' ORDER BY id) AS tasks "
        f"FROM tasks WHERE user_id IN ({owners}) GROUP BY user_id",
    )
    versions = {r["user_id"]: r["tasks"] for r in rows}
    lines = [f"{tokens[u]}\t{s}\t{versions.get(u, '')}\n" for u, s in since.items()]
    path.write_text("".join(lines))
    log(f"sync clients: {len(lines)} users synced once (their tokens and ETags in {path.name})")
