"""PostgreSQL crashes under write load: no acknowledged write is lost, and the service heals.

A real `uvicorn main:app` process serves several clients that create tasks and update their
own tasks, one request at a time each, against a private cluster with production's durability
settings (fsync, synchronous_commit and full_page_writes on; asserted with SHOW). Midway a
CHECKPOINT runs, so crash recovery starts from a redo point inside the load. Then every
process of the cluster gets SIGKILL at once (`PrivateCluster.crash`: one `killpg` for the
postmaster and all its backends, as an OOM kill of the server's cgroup does; a SIGKILL of the
postmaster alone would leave its backends running). The clients keep going: during the outage
they get 503s; the cluster is started again (crash recovery replays the WAL, checked in the
server's log) and the same service process, never restarted, answers 2xx again by itself.
Each client goes on until it has had acknowledged writes after the restart too.

Then the database is read back. The promise: a 2xx is only sent for a committed, durable
write. So every acknowledged create is there with its title, and every task holds the value
of its last acknowledged write, or else that of the one request of its client that was in
flight, unanswered, when the crash came (committed before the crash, answered 503 after it).
Nothing else unacknowledged is stored.

What this does not prove: the kernel's page cache survives the kill (unlike a power cut), so
WAL that PostgreSQL wrote but had not fsynced is not lost here; fsync itself is only asserted
to be on. With `synchronous_commit=off`, though, commits are acknowledged before their WAL
leaves PostgreSQL's shared memory, and this test sees the loss (see `test_audit_*` below for
the checker's own tests).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from tests.faults._support import TASKS, ServiceProcess, service_env
from tests.support.databases import alembic_upgrade
from tests.support.pgcluster import PrivateCluster, require_pg_bindir
from tests.support.tokens import auth

DBNAME = "taskapi"
# As production runs PostgreSQL: asserted with SHOW before the load.
DURABILITY = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}

CLIENTS = 8
ACKS_BEFORE_CHECKPOINT = 150
ACKS_AFTER_CHECKPOINT = 200  # then the crash
OUTAGE_503S_PER_CLIENT = 3  # every client has met the outage before the restart
ACKS_AFTER_RESTART_PER_CLIENT = 20
PER_CLIENT_MAX = 5000  # a bound on each client's loop; the phases end long before
BACKOFF_AFTER_503 = 0.02  # a client's pause after a 503 (it would honour Retry-After), so
# eight clients do not spin on the two CPUs that PostgreSQL's recovery needs: pacing, not
# synchronisation (every phase waits for a condition, with a deadline)
PHASE_TIMEOUT = 20.0
TEST_TIMEOUT = 50.0


@dataclass
class Write:
    """One request as its client saw it (times from time.perf_counter)."""

    kind: str  # "create" or "update"
    title: str
    task_id: int | None  # the task updated, or the id an acknowledged create got
    sent: float
    done: float
    status: int | None  # None: no HTTP answer at all

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Writer:
    """One client: creates tasks and updates its own, one request at a time."""

    user: str
    writes: list[Write] = field(default_factory=list)
    own: list[int] = field(default_factory=list)  # ids of its acknowledged creates
    unexpected: list[str] = field(default_factory=list)

    def acks(self, since: float = 0.0) -> int:
        return sum(1 for w in self.writes if w.acked and w.sent >= since)

    def unavailable(self, since: float = 0.0) -> int:
        return sum(1 for w in self.writes if w.status == 503 and w.sent >= since)

    async def run(
        self, client: httpx.AsyncClient, changed: asyncio.Condition, stop: asyncio.Event
    ) -> None:
        headers = auth(self.user)
        try:
            for n in range(PER_CLIENT_MAX):
                if stop.is_set():
                    return
                write = await self._one(client, headers, n)
                self.writes.append(write)
                async with changed:
                    changed.notify_all()
                if write.status == 503:
                    await asyncio.sleep(BACKOFF_AFTER_503)
        finally:
            async with changed:
                changed.notify_all()

    async def _one(self, client: httpx.AsyncClient, headers: dict[str, str], n: int) -> Write:
        if not self.own or n % 3 == 0:
            kind, task_id, title = "create", None, f"{self.user}-create-{n}"
            request = client.build_request("POST", TASKS, json={"title": title}, headers=headers)
        else:
            task_id = self.own[n % len(self.own)]
            kind, title = "update", f"{self.user}-task-{task_id}-update-{n}"
            request = client.build_request(
                "PUT", f"{TASKS}/{task_id}", json={"title": title}, headers=headers
            )
        sent = time.perf_counter()
        try:
            response = await client.send(request)
        except httpx.TransportError as error:
            self.unexpected.append(f"{kind} {title}: no answer ({error!r})")
            return Write(kind, title, task_id, sent, time.perf_counter(), None)
        done = time.perf_counter()
        status = response.status_code
        if status == 503:
            if response.json().get("code") != "SERVICE_UNAVAILABLE":
                self.unexpected.append(f"{kind} {title}: 503 {response.text}")
        elif status == (201 if kind == "create" else 200):
            body = response.json()
            if body["title"] != title:
                self.unexpected.append(f"{kind} {title}: answered {body}")
            if kind == "create":
                task_id = body["id"]
                self.own.append(body["id"])
        else:
            self.unexpected.append(f"{kind} {title}: {status} {response.text}")
        return Write(kind, title, task_id, sent, done, status)


# --------------------------------------------------------------------------
# the check: what was acknowledged against what is stored
# --------------------------------------------------------------------------


@dataclass
class Audit:
    acked_creates: int = 0
    creates_found: int = 0
    acked_updates: int = 0
    last_acks_updates: int = 0  # tasks whose last acknowledged write is an update
    last_updates_found: int = 0
    in_flight_at_crash: int = 0  # unanswered (or 503) requests sent before the crash
    in_flight_applied: int = 0  # ... of which the database holds the value
    acked_across_crash: int = 0  # sent before the crash, acknowledged after it
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def in_flight_at(writer: Writer, t_crash: float) -> Write | None:
    """The client's request that was in flight when the crash came and got no 2xx."""
    pending = [
        w
        for w in writer.writes
        if w.sent < t_crash and not w.acked and (w.status is None or w.done >= t_crash)
    ]
    assert len(pending) <= 1, pending  # one request at a time
    return pending[0] if pending else None


def audit(writers: list[Writer], stored: dict[int, tuple[str, str]], t_crash: float) -> Audit:
    """Compare every client's acknowledged writes with the rows read back (id -> title, user)."""
    result = Audit()
    users = {w.user for w in writers}
    acked_ids: dict[int, str] = {}  # id -> title of the create acknowledged with it
    for task_id, (title, user) in stored.items():
        if user not in users:
            result.unexpected.append(f"task {task_id} {title!r} of unknown user {user!r}")
    for writer in writers:
        flight = in_flight_at(writer, t_crash)
        if flight is not None:
            result.in_flight_at_crash += 1
        result.acked_across_crash += sum(
            1 for w in writer.writes if w.acked and w.sent < t_crash <= w.done
        )
        history: dict[int, list[Write]] = {}  # task id -> its writes, in order
        for w in writer.writes:
            if w.kind == "create" and w.acked:
                result.acked_creates += 1
                assert w.task_id is not None
                if w.task_id in acked_ids:  # the sequence went back: the first create was lost
                    result.lost.append(
                        f"{writer.user}: id {w.task_id} acknowledged for {w.title!r} was "
                        f"acknowledged before for {acked_ids[w.task_id]!r}"
                    )
                acked_ids[w.task_id] = w.title
                history[w.task_id] = [w]
            elif w.kind == "update":
                result.acked_updates += w.acked
                assert w.task_id is not None
                history[w.task_id].append(w)
        for task_id, writes in history.items():
            if stored.get(task_id, ("", ""))[1] != writer.user:
                result.lost.append(f"{writer.user}: acknowledged create {task_id} is missing")
                continue
            result.creates_found += 1
            value = stored[task_id][0]
            acked = [w for w in writes if w.acked]
            last = acked[-1]
            after_last = writes[writes.index(last) + 1 :]
            if last.kind == "update":
                result.last_acks_updates += 1
            if value == last.title:
                result.last_updates_found += last.kind == "update"
            elif flight is not None and flight in after_last and value == flight.title:
                result.in_flight_applied += 1
            elif value in {w.title for w in acked}:
                result.lost.append(
                    f"{writer.user}: task {task_id} holds the earlier acknowledged {value!r}, "
                    f"not the last acknowledged {last.title!r}"
                )
            else:
                result.unexpected.append(
                    f"{writer.user}: task {task_id} holds {value!r}; last acknowledged "
                    f"{last.title!r}, in flight at the crash {flight and flight.title!r}"
                )
        extra = {i: t for i, (t, u) in stored.items() if u == writer.user and i not in history}
        for task_id, title in extra.items():
            if flight is not None and flight.kind == "create" and title == flight.title:
                result.in_flight_applied += 1
            else:
                result.unexpected.append(
                    f"{writer.user}: unacknowledged task {task_id} {title!r} is stored"
                )
    return result


def assert_no_loss(result: Audit) -> None:
    assert result.lost == [], result.lost[:20]
    assert result.unexpected == [], result.unexpected[:20]
    assert result.creates_found == result.acked_creates


# --------------------------------------------------------------------------
# the crash
# --------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    require_pg_bindir()
    with PrivateCluster(fsync=True, settings=DURABILITY) as pg:
        pg.create_database(DBNAME)
        alembic_upgrade(pg.url("postgresql", dbname=DBNAME))
        yield pg


@pytest.fixture
def service(cluster: PrivateCluster) -> Iterator[ServiceProcess]:
    env = service_env(cluster.url("postgresql", dbname=DBNAME))
    env.update(
        LOG_LEVEL="ERROR",  # a WARNING per 503 would flood the output
        DB_CONNECT_TIMEOUT_SECONDS="2",
        DB_POOL_TIMEOUT_SECONDS="5",
        DB_STATEMENT_TIMEOUT_SECONDS="5",
        DB_POOL_SIZE=str(CLIENTS + 2),
    )
    process = ServiceProcess(env)
    try:
        yield process.start()
    finally:
        process.stop()


async def read_back(pg: PrivateCluster) -> dict[int, tuple[str, str]]:
    connection = await asyncpg.connect(pg.url("postgresql", dbname=DBNAME), timeout=10)
    try:
        rows = await connection.fetch("SELECT id, title, user_id FROM tasks")
    finally:
        await connection.close()
    return {row["id"]: (row["title"], row["user_id"]) for row in rows}


async def show_durability(pg: PrivateCluster) -> dict[str, str]:
    """The settings as a session of the service's role on its database sees them."""
    connection = await asyncpg.connect(pg.url("postgresql", dbname=DBNAME), timeout=10)
    try:
        return {name: await connection.fetchval(f"SHOW {name}") for name in DURABILITY}
    finally:
        await connection.close()


def lsn(text: str) -> int:
    """A WAL position as PostgreSQL logs it (`0/1511AD8`), in bytes."""
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@pytest.mark.slow
async def test_postgres_crash_under_load_loses_no_acknowledged_write(
    cluster: PrivateCluster, service: ServiceProcess
) -> None:
    pg = cluster
    assert await show_durability(pg) == DURABILITY
    writers = [Writer(f"crash-{i}") for i in range(CLIENTS)]
    changed = asyncio.Condition()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS + 2, max_keepalive_connections=CLIENTS + 2)

    async with (
        asyncio.timeout(TEST_TIMEOUT),
        httpx.AsyncClient(base_url=service.base_url, timeout=15, limits=limits) as client,
    ):
        tasks = [asyncio.create_task(w.run(client, changed, stop)) for w in writers]

        async def until(what: str, condition: Callable[[], bool]) -> None:
            async with asyncio.timeout(PHASE_TIMEOUT), changed:
                await changed.wait_for(lambda: condition() or all(t.done() for t in tasks))
            assert condition(), f"the load ended before {what}: {[w.unexpected for w in writers]}"

        def acks(since: float = 0.0) -> int:
            return sum(w.acks(since) for w in writers)

        try:
            await until("the checkpoint", lambda: acks() >= ACKS_BEFORE_CHECKPOINT)
            checkpoint_redo = await asyncio.to_thread(
                pg.psql, "CHECKPOINT; SELECT redo_lsn FROM pg_control_checkpoint()"
            )
            t_checkpoint = time.perf_counter()
            await until(
                "the crash",
                lambda: acks(t_checkpoint) >= ACKS_AFTER_CHECKPOINT and all(w.own for w in writers),
            )

            log_offset = len(pg.log_tail(10**9))
            t_crash = time.perf_counter()
            killed = pg.crash()  # no await between the time stamp and the kill
            t_dead = time.perf_counter()

            await until(
                "every client met the outage",
                lambda: all(w.unavailable(t_dead) >= OUTAGE_503S_PER_CLIENT for w in writers),
            )
            health = await client.get("/health")
            ready = await client.get("/ready")
            assert health.status_code == 200, health.text
            assert ready.status_code == 503, ready.text

            t_start = time.perf_counter()
            await asyncio.to_thread(pg.start)  # crash recovery, then accepting connections
            t_ready = time.perf_counter()
            await until(
                "every client had acknowledged writes after the restart",
                lambda: all(w.acks(t_start) >= ACKS_AFTER_RESTART_PER_CLIENT for w in writers),
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
    assert service.proc is not None
    assert service.proc.poll() is None, "the service process died; it must heal by itself"

    recovery_log = pg.log_tail(10**9)[log_offset:]
    assert "database system was not properly shut down; automatic recovery" in recovery_log
    redo = re.search(
        r"redo starts at (\S+).*?redo done at (\S+) .*?elapsed: ([\d.]+) s", recovery_log, re.S
    )
    assert redo, recovery_log[-3000:]
    assert redo.group(1) == checkpoint_redo  # recovery started at the mid-load checkpoint
    redo_bytes = lsn(redo.group(2)) - lsn(redo.group(1))
    assert redo_bytes > 0

    stored = await read_back(pg)
    result = audit(writers, stored, t_crash)

    writes = [w for writer in writers for w in writer.writes]
    statuses = sorted({w.status for w in writes}, key=str)
    outage = [w for w in writes if t_dead <= w.sent and w.done <= t_start]
    unavailable = [w for w in writes if w.status == 503]
    after_ready = [w for w in writes if w.sent >= t_ready]
    first_ack = min(w.done for w in writes if w.acked and w.sent >= t_start)
    print(
        f"\n[pg-crash] settings={DURABILITY} clients={CLIENTS} killed_processes={len(killed)} "
        f"acknowledged_creates={result.acked_creates} found={result.creates_found} "
        f"acknowledged_updates={result.acked_updates} "
        f"tasks_ending_on_acknowledged_update={result.last_acks_updates} "
        f"found={result.last_updates_found} lost={len(result.lost)} "
        f"unexpected={len(result.unexpected)} "
        f"acknowledged_before_crash={sum(w.acked and w.done < t_crash for w in writes)} "
        f"acknowledged_across_crash={result.acked_across_crash} "
        f"acknowledged_after_restart={acks(t_start)} "
        f"in_flight_at_crash={result.in_flight_at_crash} "
        f"in_flight_applied={result.in_flight_applied} rows={len(stored)} "
        f"503s={len(unavailable)} 503s_during_outage={len(outage)} "
        f"503s_after_ready={sum(w.status == 503 for w in after_ready)}/{len(after_ready)} "
        f"outage_held={t_start - t_dead:.3f}s restart_took={t_ready - t_start:.3f}s "
        f"wal_replayed={redo_bytes}B redo_elapsed={redo.group(3)}s "
        f"time_to_recovery_from_crash={first_ack - t_crash:.3f}s "
        f"from_restart={first_ack - t_start:.3f}s statuses={statuses}"
    )
    for writer in writers:
        assert writer.unexpected == [], writer.unexpected[:10]
    assert set(statuses) <= {200, 201, 503}, statuses
    assert outage
    assert {w.status for w in outage} == {503}
    assert_no_loss(result)


# --------------------------------------------------------------------------
# the check's own tests (no database): it catches loss
# --------------------------------------------------------------------------


def synthetic() -> tuple[list[Writer], dict[int, tuple[str, str]], float]:
    """Two clients' histories around a crash at t=10, and what a faithful database holds."""
    a, b = Writer("a"), Writer("b")
    a.writes = [
        Write("create", "a-create-0", 1, 1, 2, 201),
        Write("update", "a-task-1-update-1", 1, 3, 4, 200),
        Write("update", "a-task-1-update-2", 1, 9, 11, 503),  # in flight at the crash
        Write("update", "a-task-1-update-3", 1, 12, 13, 503),  # during the outage
        Write("update", "a-task-1-update-4", 1, 20, 21, 200),
        Write("create", "a-create-5", 2, 22, 23, 201),
    ]
    b.writes = [
        Write("create", "b-create-0", 3, 1, 2, 201),
        Write("update", "b-task-3-update-1", 3, 5, 6, 200),
        Write("create", "b-create-2", None, 9, 11, 503),  # in flight at the crash
        Write("update", "b-task-3-update-3", 3, 12, 13, 503),
    ]
    stored = {
        1: ("a-task-1-update-4", "a"),
        2: ("a-create-5", "a"),
        3: ("b-task-3-update-1", "b"),
        4: ("b-create-2", "b"),  # committed before the crash, never acknowledged
    }
    return [a, b], stored, 10.0


def test_audit_accepts_a_faithful_database() -> None:
    writers, stored, t_crash = synthetic()
    result = audit(writers, stored, t_crash)
    assert_no_loss(result)
    assert (result.acked_creates, result.acked_updates, result.in_flight_applied) == (3, 3, 1)


def test_audit_catches_a_lost_create() -> None:
    writers, stored, t_crash = synthetic()
    del stored[2]
    with pytest.raises(AssertionError, match="acknowledged create 2 is missing"):
        assert_no_loss(audit(writers, stored, t_crash))


def test_audit_catches_a_lost_update() -> None:
    writers, stored, t_crash = synthetic()
    stored[3] = ("b-create-0", "b")  # the acknowledged update rolled back
    with pytest.raises(AssertionError, match="earlier acknowledged"):
        assert_no_loss(audit(writers, stored, t_crash))


def test_audit_accepts_only_the_request_in_flight_at_the_crash() -> None:
    writers, stored, t_crash = synthetic()
    stored[3] = ("b-task-3-update-3", "b")  # refused with 503 during the outage, yet stored
    with pytest.raises(AssertionError, match="holds 'b-task-3-update-3'"):
        assert_no_loss(audit(writers, stored, t_crash))


def test_audit_catches_an_id_handed_out_twice() -> None:
    """A lost create whose id the sequence (rolled back with it) hands out again."""
    writers, stored, t_crash = synthetic()
    writers[1].writes.append(Write("create", "b-create-4", 2, 30, 31, 201))
    with pytest.raises(AssertionError, match="acknowledged before for 'a-create-5'"):
        assert_no_loss(audit(writers, stored, t_crash))
