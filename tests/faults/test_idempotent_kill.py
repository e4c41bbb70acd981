"""A real `uvicorn main:app` SIGKILLed during idempotent creates; every key retried after.

Promise under test (issue 12): the first answer to a create with an `Idempotency-Key` is
stored in the same transaction as the task. So after a crash each key has a task and its
stored answer, or neither; a retry with the same key and body makes the task exactly once;
and a client that got a 2xx gets the same answer again, byte for byte.

Several clients send creates, each with a fresh key and a body of its own (every field set),
one request at a time each, several users shared by two clients each. The service gets
SIGKILL while requests are in flight (while one of them is inside COMMIT, slowed down and
seen in pg_stat_activity), is started again on the same database, and the load goes on with
new keys; `ROUNDS` kills in all. Then, before any retry, each key has its task and its
stored answer, or neither. Then every key ever sent is retried with its body (answered or
not): exactly one task per key (counted by its title, which is unique to the key), the id an
acknowledged first attempt got, and for an acknowledged key the very bytes and headers of
the first answer with `Idempotent-Replayed: true`. An unanswered key's retry is a replay
exactly when its task was committed before the kill (at least one was: a COMMIT the backend
finished after its client had died), and a second retry of it replays the first.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from tests.faults._support import TASKS, ServiceProcess, service_env
from tests.support.databases import alembic_upgrade
from tests.support.pgcluster import PrivateCluster, require_pg_bindir
from tests.support.tokens import auth

pytestmark = pytest.mark.slow

CLIENTS = 16
USERS = 8  # two clients per user: one user's keys come from several connections
ROUNDS = 2  # kills
ACKS_PER_ROUND = 120  # acknowledged creates in a round before its kill
# Each commit of the service's sessions waits this long before its WAL flush (PostgreSQL's
# `commit_delay`, microseconds; as a slow disk would), so a request can be caught inside
# COMMIT, which its backend completes after the service has died: the answer is lost, the
# task and its stored answer are not. Without it such a case is rare (measured: 0 and 1 of
# the 48 requests unanswered at three kills, in two runs).
COMMIT_DELAY_US = 50_000
SLOW_COMMITS = {"commit_delay": COMMIT_DELAY_US, "commit_siblings": 0}  # (needs fsync on)
DBNAME = "taskapi"
PER_CLIENT_MAX = 2000  # a bound on each client's loop; the kill comes long before
COMMIT_WAIT_TIMEOUT = 10.0
RETRY_CONCURRENCY = 16
BACKENDS_GONE_TIMEOUT = 30.0
TEST_TIMEOUT = 80.0
REPLAYED = "idempotent-replayed"


@pytest.fixture
def service_db() -> Iterator[str]:
    """A private cluster (fsync on, slow commits; its own connection limit, so that other
    tests crowding the shared server cannot make the service's connections fail),
    migrated with `alembic upgrade head`."""
    require_pg_bindir()
    with PrivateCluster(fsync=True, settings=SLOW_COMMITS) as pg:
        pg.create_database(DBNAME)
        url = pg.url("postgresql", dbname=DBNAME)
        alembic_upgrade(url)
        yield url


@pytest.fixture
def service(service_db: str) -> Iterator[ServiceProcess]:
    env = service_env(service_db)
    env.update(LOG_LEVEL="ERROR", DB_POOL_SIZE=str(CLIENTS + 2))
    process = ServiceProcess(env)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def admin(service_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(service_db, timeout=10)
    yield connection
    await connection.close()


async def show_slow_commits(admin: asyncpg.Connection) -> dict[str, str]:
    """The settings as a session of the service's role sees them."""
    return {name: await admin.fetchval(f"SHOW {name}") for name in ("fsync", *SLOW_COMMITS)}


@dataclass
class Attempt:
    """A key's first attempt, as its client saw it."""

    user: str
    key: str
    body: dict[str, Any]
    round: int
    status: int | None = None  # None: no HTTP answer
    content: bytes = b""
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    error: str | None = None  # the transport error instead of an answer

    @property
    def title(self) -> str:
        return str(self.body["title"])

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def new_attempt(client: int, user: str, round_: int, n: int) -> Attempt:
    title = f"idem-r{round_}-c{client}-{n}"
    body = {
        "title": title,
        "description": f"the body of {title}: é ✓",
        "completed": n % 2 == 0,
        "priority": ("low", "medium", "high")[n % 3],
        "due_date": f"2030-01-{1 + n % 28:02d}T12:00:00Z",
    }
    return Attempt(user, f"key-{uuid.uuid4()}", body, round_)


async def post_until_killed(
    http: httpx.AsyncClient,
    client: int,
    user: str,
    round_: int,
    attempts: list[Attempt],
    acks: list[int],
    enough: asyncio.Event,
    unexpected: list[str],
) -> None:
    token = auth(user)
    for n in range(PER_CLIENT_MAX):
        attempt = new_attempt(client, user, round_, n)
        attempts.append(attempt)  # before it is sent: an unanswered one is still a key sent
        headers = {**token, "Idempotency-Key": attempt.key}
        try:
            response = await http.post(TASKS, json=attempt.body, headers=headers)
        except httpx.TransportError as error:
            attempt.error = type(error).__name__
            return  # the process died
        attempt.status = response.status_code
        attempt.content = response.content
        attempt.headers = response.headers
        if response.status_code != 201 or REPLAYED in response.headers:
            unexpected.append(f"{attempt.key}: {response.status_code} {response.text}")
            return
        acks[0] += 1
        if acks[0] >= ACKS_PER_ROUND:
            enough.set()


async def service_backends(admin: asyncpg.Connection) -> int:
    """Connections to the test's database other than the test's own."""
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    return count


async def until_backends_gone(admin: asyncpg.Connection) -> float:
    """Poll until the killed service's backends have gone (their transactions rolled back,
    their advisory locks released); return how long that took."""
    start = time.perf_counter()
    deadline = start + BACKENDS_GONE_TIMEOUT
    while (left := await service_backends(admin)) > 0:
        assert time.perf_counter() < deadline, f"{left} backends outlived the service"
        await asyncio.sleep(0.01)  # polling interval
    return time.perf_counter() - start


async def committing(admin: asyncpg.Connection) -> int:
    """The service's backends inside COMMIT (with `commit_delay`, waiting to flush)."""
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'active' AND query ILIKE 'COMMIT%' AND pid <> pg_backend_pid()"
    )
    return count


async def kill_round(
    service: ServiceProcess,
    admin: asyncpg.Connection,
    round_: int,
    attempts: list[Attempt],
    unexpected: list[str],
) -> tuple[int, int, int]:
    """Start the service, load it with keyed creates, SIGKILL it mid-load (once enough
    creates are acknowledged, while some request is inside COMMIT);
    return the acks at the kill, the backends seen in COMMIT just before it, and the
    requests sent but unanswered."""
    service.start()
    acks = [0]
    enough = asyncio.Event()
    users = [f"idem-user-{i}" for i in range(USERS)]
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    mine: list[Attempt] = []
    async with httpx.AsyncClient(base_url=service.base_url, timeout=20, limits=limits) as http:
        tasks = [
            asyncio.create_task(
                post_until_killed(http, c, users[c % USERS], round_, mine, acks, enough, unexpected)
            )
            for c in range(CLIENTS)
        ]
        waiter = asyncio.create_task(enough.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        assert enough.is_set(), unexpected[:10]
        deadline = time.perf_counter() + COMMIT_WAIT_TIMEOUT
        in_commit = await committing(admin)
        while in_commit == 0:  # polled: no request is held for this
            assert time.perf_counter() < deadline, "no request reached COMMIT"
            assert not all(t.done() for t in tasks), unexpected[:10]
            in_commit = await committing(admin)
        service.signal(signal.SIGKILL)
        acks_at_kill = acks[0]
        assert await asyncio.to_thread(service.wait, 30) == -signal.SIGKILL
        await asyncio.gather(*tasks)
        waiter.cancel()
    attempts.extend(mine)
    return acks_at_kill, in_commit, sum(1 for a in mine if a.status is None)


async def stored_pairs(
    admin: asyncpg.Connection, titles: list[str]
) -> tuple[dict[str, list[int]], dict[tuple[str, str], int], list[str]]:
    """The tasks with these titles (title -> ids), the stored keys of their users
    ((user, key) -> task id), and every mismatch between the two."""
    tasks = await admin.fetch(
        "SELECT id, title, user_id FROM tasks WHERE title = ANY($1::text[])", titles
    )
    keys = await admin.fetch("SELECT user_id, key, task_id, status FROM idempotency_keys")
    by_title: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for row in tasks:
        by_title.setdefault(row["title"], []).append(row["id"])
        owner[row["id"]] = row["user_id"]
    stored = {(row["user_id"], row["key"]): row["task_id"] for row in keys}
    keyed_tasks = {row["task_id"] for row in keys}
    problems = [f"task {i} has no stored answer" for i in owner if i not in keyed_tasks]
    problems += [
        f"key {key} of {user} names task {task_id}, which {owner.get(task_id)} holds"
        for (user, key), task_id in stored.items()
        if owner.get(task_id) != user
    ]
    problems += [f"key {row['key']} stored {row['status']}" for row in keys if row["status"] != 201]
    return by_title, stored, problems


async def retry(
    http: httpx.AsyncClient, attempt: Attempt, gate: asyncio.Semaphore
) -> httpx.Response:
    async with gate:
        headers = {**auth(attempt.user), "Idempotency-Key": attempt.key}
        return await http.post(TASKS, json=attempt.body, headers=headers)


async def test_sigkill_during_idempotent_creates_then_every_key_retried_makes_one_task_each(
    service: ServiceProcess, admin: asyncpg.Connection
) -> None:
    assert await show_slow_commits(admin) == {
        "fsync": "on",
        **{name: str(value) for name, value in SLOW_COMMITS.items()},
    }
    attempts: list[Attempt] = []
    unexpected: list[str] = []
    per_round: list[tuple[int, int, int]] = []
    backends_gone: list[float] = []
    t_load = time.perf_counter()
    async with asyncio.timeout(TEST_TIMEOUT):
        for round_ in range(ROUNDS):
            per_round.append(await kill_round(service, admin, round_, attempts, unexpected))
            assert unexpected == [], unexpected[:10]
            backends_gone.append(await until_backends_gone(admin))

        # Before any retry: each key has its task and its stored answer, or neither.
        titles = [a.title for a in attempts]
        before, stored_before, problems = await stored_pairs(admin, titles)
        problems += [
            f"{a.key}: task {before.get(a.title)}, stored answer for task "
            f"{stored_before.get((a.user, a.key))}"
            for a in attempts
            if before.get(a.title, [None]) != [stored_before.get((a.user, a.key))]
        ]
        assert problems == [], problems[:20]

        t_restart = time.perf_counter()
        service.start()
        t_retry = time.perf_counter()
        unanswered = [a for a in attempts if a.status is None]
        gate = asyncio.Semaphore(RETRY_CONCURRENCY)
        limits = httpx.Limits(max_connections=RETRY_CONCURRENCY)
        async with httpx.AsyncClient(base_url=service.base_url, timeout=20, limits=limits) as http:
            retried = await asyncio.gather(*(retry(http, a, gate) for a in attempts))
            # An unanswered key's retry may have made its task: a second retry replays that.
            again = await asyncio.gather(*(retry(http, a, gate) for a in unanswered))
        t_done = time.perf_counter()

    after, stored_after, failures = await stored_pairs(admin, titles)
    replays = dict(zip((a.key for a in unanswered), again, strict=True))
    committed_unanswered = replayed = 0
    for attempt, response in zip(attempts, retried, strict=True):
        ids = after.get(attempt.title, [])
        if len(ids) != 1:
            failures.append(f"{attempt.key}: {len(ids)} tasks {ids}")
            continue
        task_id = ids[0]
        if stored_after.get((attempt.user, attempt.key)) != task_id:
            failures.append(f"{attempt.key}: the stored answer does not name task {task_id}")
        if response.status_code != 201 or response.json()["id"] != task_id:
            failures.append(f"{attempt.key}: retry {response.status_code} {response.text}")
            continue
        was_stored = attempt.title in before
        is_replay = response.headers.get(REPLAYED) == "true"
        replayed += is_replay
        if attempt.acked:
            if not is_replay or response.content != attempt.content:
                failures.append(f"{attempt.key}: the retry is not the first answer replayed")
            for name in ("location", "etag", "content-type", "content-length"):
                if response.headers.get(name) != attempt.headers.get(name):
                    failures.append(f"{attempt.key}: {name} differs in the replay")
            continue
        committed_unanswered += was_stored
        if is_replay != was_stored:
            failures.append(
                f"{attempt.key}: unanswered, stored before the retry: {was_stored}, "
                f"the retry replayed: {is_replay}"
            )
        second = replays[attempt.key]
        if second.headers.get(REPLAYED) != "true" or second.content != response.content:
            failures.append(f"{attempt.key}: the second retry is not the first one replayed")

    rows = await admin.fetchval("SELECT count(*) FROM tasks")
    duplicates = sum(len(ids) - 1 for ids in after.values())
    acked = sum(a.acked for a in attempts)
    print(
        f"\n[idempotent-sigkill] clients={CLIENTS} users={USERS} kills={ROUNDS} "
        f"commit_delay={COMMIT_DELAY_US}us keys_sent={len(attempts)} "
        f"acknowledged_before_kill={acked} unanswered={len(unanswered)} "
        f"(in_flight_at_kill={sum(a.error != 'ConnectError' for a in unanswered)}, "
        f"refused_connection={sum(a.error == 'ConnectError' for a in unanswered)}) "
        f"unanswered_but_committed={committed_unanswered} "
        f"per_round(acks_at_kill, in_commit_at_kill, unanswered)={per_round} "
        f"backends_gone_after_kill={[f'{t:.3f}s' for t in backends_gone]} "
        f"tasks_before_retry={len(before)} retries={len(retried)}+{len(again)} "
        f"first_retry_replayed={replayed} first_retry_created={len(retried) - replayed} "
        f"tasks_after={len(after)} rows={rows} duplicates={duplicates} "
        f"failures={len(failures)} load_and_kills={t_restart - t_load:.1f}s "
        f"restart={t_retry - t_restart:.1f}s retries={t_done - t_retry:.1f}s"
    )
    assert failures == [], failures[:20]
    assert unanswered, "no request was in flight at any kill"
    # A kill came while a COMMIT was running: its answer was lost, not its task.
    assert committed_unanswered > 0
    assert len(after) == len(attempts) == rows
    assert duplicates == 0
