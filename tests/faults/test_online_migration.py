"""Migrations 0002, 0003 and 0004 are online: each applied to a large `tasks` table while
the service of before it serves writes.

The load test, for each migration N: a private cluster (fsync on; every lock wait of 10 ms or
more logged with its length: `log_lock_waits`, `deadlock_timeout = 10ms`; every statement of
the migration logged with its duration) gets the schema at the revision before N (`alembic
upgrade N-1`) and `MIGRATION_ROWS` tasks of a few thousand users (`INSERT ... SELECT
generate_series`; 200,000 by default, one million for the issue's figure:
`MIGRATION_ROWS=1000000 make test PYTEST_ARGS="-s tests/faults/test_online_migration.py"`).
The service that runs before a deploy, built from the code of the commit before migration N
was added (`git archive`; a service of today's code refuses to start on an older schema),
serves a write load: clients create, update, read, list and delete tasks of users of the
table, with the service's statement timeout at the migration's `lock_timeout`. Under that
load run `alembic upgrade N`, then `alembic downgrade N-1`, then `alembic upgrade N` again,
and the load goes on after each. Then: no request failed (every answer the expected 2xx, none
lost), each step succeeded, no statement waited on a lock as long as `lock_timeout` (the
server's log has every wait of 10 ms or more, the migration's own included) and none timed
out, every index of `tasks` is valid, the rows are all there, and a service of today's code
starts on the result (migrated to the head) and serves it.

The tests after it pin what the load test of 0002 found, each deterministically and for
each migration, on a fresh database at the revision before it, with one session of its own
in the role of a request of the running service: the migration never deadlocks with a
request in either lock order, a failed attempt runs again, and its index builds are bounded
by `lock_timeout` alone. Every test runs `alembic` as a user does (a subprocess,
`migrations/env.py`).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.faults._support import ROOT, TASKS, ServiceProcess, service_env
from tests.support.pgcluster import PrivateCluster, require_pg_bindir
from tests.support.tokens import auth

pytestmark = pytest.mark.slow

# Each online migration: its file and the revision before it.
MIGRATIONS = {
    "0002": ("migrations/versions/2026_11_29_1700-0002_sync.py", "0001"),
    "0003": ("migrations/versions/2026_11_29_1800-0003_lists.py", "0002"),
    "0004": ("migrations/versions/2026_11_30_1200-0004_search.py", "0003"),
}
MIGRATION_APP = "migration"  # the application_name of the migration's session
SERVICE_APP = "service-0001"  # ... and of the service's, in the load test
MIGRATION_TIMEOUT = 240.0
WAIT_TIMEOUT = 60.0  # for the migration to reach a lock (alembic starts in seconds)

# The load test.
ROWS = int(os.environ.get("MIGRATION_ROWS", "200000"))
USERS = max(ROWS // 250, 40)  # 1,000,000 rows: 4,000 users of 250 tasks
CLIENTS = 10
THINK = 0.05  # a client's pause between requests: pacing, so that the load leaves the two
# CPUs room for the migration (a closed loop saturates them, and then every latency and the
# migration's own duration measure the CPU queue rather than any lock)
BULK_IDS_PER_CLIENT = 50  # tasks of the table each client updates and reads
ACKS_BEFORE = 10  # per client, before the first step (the service warm)
ACKS_AFTER_EACH_STEP = 10  # per client, sent after each step ended
PER_CLIENT_MAX = 20_000  # a bound on each client's loop; the steps end long before
PHASE_TIMEOUT = 60.0
MIGRATOR = "migrator"  # the migration's role: its statements are logged with their duration
SERVER = {
    "shared_buffers": "128MB",
    "maintenance_work_mem": "128MB",
    "max_wal_size": "2GB",
    "log_lock_waits": True,  # every wait of deadlock_timeout or more, logged with its length
    "deadlock_timeout": "10ms",
    "log_line_prefix": "%m [%p] %a: ",  # %a: the session's application_name
}


def alembic_env(url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@dataclass
class Step:
    """One `alembic` command, as it ran."""

    args: tuple[str, ...]
    started: float = 0.0
    ended: float = 0.0
    returncode: int | None = None
    output: str = ""
    log: str = ""  # the server's log while it ran (and the load went on after it)

    @property
    def seconds(self) -> float:
        return self.ended - self.started


async def alembic(url: str, *args: str, **env: str) -> Step:
    """`alembic <args>` on `url`, its session named MIGRATION_APP."""
    step = Step(args)
    alembic_bin = Path(sys.executable).with_name("alembic")
    step.started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        str(alembic_bin),
        *args,
        cwd=ROOT,
        env=alembic_env(f"{url}?application_name={MIGRATION_APP}", **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(MIGRATION_TIMEOUT):
        out, _ = await process.communicate()
    step.ended = time.perf_counter()
    step.returncode = process.returncode
    step.output = out.decode(errors="replace")
    return step


async def migration_waits(admin: asyncpg.Connection) -> float | None:
    """How long the migration's session has been waiting for a lock (None: it is not)."""
    waited: float | None = await admin.fetchval(
        "SELECT max(extract(epoch FROM now() - l.waitstart)) FROM pg_locks l "
        "JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.application_name = $1",
        MIGRATION_APP,
    )
    return waited


async def until_migration_waits(
    admin: asyncpg.Connection,
    step: asyncio.Task[Step],
    at_least: float = 0.0,
    *,
    may_end: bool = False,
) -> float:
    """Poll until the migration has waited for a lock `at_least` seconds (or, `may_end`,
    has ended without: then 0)."""
    deadline = time.perf_counter() + WAIT_TIMEOUT
    while (waited := await migration_waits(admin)) is None or waited < at_least:
        if step.done():
            if may_end:
                return 0.0
            raise AssertionError(f"the migration ended first:\n{step.result().output[-3000:]}")
        assert time.perf_counter() < deadline, "the migration never waited for a lock"
        await asyncio.sleep(0.01)  # polling interval
    return waited


async def revision_and_indexes(admin: asyncpg.Connection) -> tuple[str, bool]:
    """The schema's revision, and whether every index of `tasks` is valid."""
    revision = await admin.fetchval("SELECT version_num FROM alembic_version")
    valid = await admin.fetchval(
        "SELECT bool_and(i.indisvalid) FROM pg_index i WHERE i.indrelid = 'tasks'::regclass"
    )
    return revision, bool(valid)


# --------------------------------------------------------------------------
# the load test: the schema at 0001, a large table, the service of before
# --------------------------------------------------------------------------


def lock_timeout_ms() -> float:
    """The `lock_timeout` the migrations run with (migrations/env.py)."""
    found = re.search(r'LOCK_TIMEOUT = "(\d+)s"', (ROOT / "migrations" / "env.py").read_text())
    assert found, "LOCK_TIMEOUT not found in migrations/env.py"
    return int(found.group(1)) * 1000.0


def git(*args: str) -> bytes:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout


def code_before_migration(revision: str, target: Path) -> str:
    """The service's code at the commit before migration `revision` was added, into
    `target`."""
    migration_file, _ = MIGRATIONS[revision]
    try:
        added = git("log", "--diff-filter=A", "--format=%H", "--", migration_file).split()[-1]
        commit = git("rev-parse", added.decode() + "^").decode().strip()
        archive = git("archive", "--format=tar", commit, "main.py", "taskapi", "migrations")
    except (subprocess.CalledProcessError, IndexError) as error:
        pytest.skip(
            f"no commit before migration {revision} in the git history (a full clone?): {error}"
        )
        raise AssertionError("unreachable") from error
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    assert not list((target / "migrations" / "versions").glob(f"*-{revision}_*"))
    return commit[:12]


async def fill(url: str) -> None:
    """USERS users and ROWS tasks, as the service would have stored them. The secondary
    indexes are dropped for the load and built again from their own definitions (about five
    times faster than maintaining them row by row), and the foreign key's per-row check is
    skipped (`session_replication_role`) and made in one query after."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        indexes = await table_indexes(connection)
        secondary = [name for name in indexes if name.startswith("ix_")]
        assert len(secondary) >= 3, indexes
        await connection.execute("SET session_replication_role = replica")
        await connection.execute("SET maintenance_work_mem = '256MB'")
        for name in secondary:
            await connection.execute(f"DROP INDEX {name}")
        await connection.execute(
            "INSERT INTO users (id, email, name, created_at, updated_at) "
            "SELECT 'bulk-' || g, 'bulk-' || g || '@example.com', 'Bulk ' || g, now(), now() "
            "FROM generate_series(1, $1::int) g",
            USERS,
        )
        await connection.execute(
            """
            INSERT INTO tasks (title, description, completed, priority, due_date, user_id,
                               created_at, updated_at)
            SELECT 'task ' || g,
                   CASE WHEN g % 3 = 0 THEN 'the description of task ' || g END,
                   g % 4 = 0,
                   (ARRAY['low', 'medium', 'high', NULL])[1 + g % 4],
                   CASE WHEN g % 5 = 0 THEN now() + g * interval '1 minute' END,
                   'bulk-' || (1 + g % $2::int),
                   now() - g * interval '1 second',
                   now() - g * interval '1 second'
            FROM generate_series(1, $1::int) g
            """,
            ROWS,
            USERS,
        )
        for name in secondary:
            await connection.execute(indexes[name])
        await connection.execute("RESET session_replication_role")
        assert await table_indexes(connection) == indexes
        orphans = await connection.fetchval(
            "SELECT count(*) FROM tasks t WHERE NOT EXISTS "
            "(SELECT 1 FROM users u WHERE u.id = t.user_id)"
        )
        assert orphans == 0
        await connection.execute("VACUUM ANALYZE users, tasks")  # a table long in service
    finally:
        await connection.close()


async def table_indexes(connection: asyncpg.Connection) -> dict[str, str]:
    rows = await connection.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks'"
    )
    return {row["indexname"]: row["indexdef"] for row in rows}


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    """The module's PostgreSQL: a private cluster, whose log the tests read, and whose
    connections no other test takes (the shared server, crowded by other suites, has
    refused some with 'too many clients')."""
    require_pg_bindir()
    with PrivateCluster(fsync=True, settings=SERVER) as pg:
        pg.psql(
            f"CREATE ROLE {MIGRATOR} LOGIN SUPERUSER; "
            f"ALTER ROLE {MIGRATOR} SET log_min_duration_statement = 0"
        )
        yield pg


@pytest.fixture
def database(cluster: PrivateCluster) -> Iterator[str]:
    """A fresh, empty database of the test's own in the module's cluster; its name."""
    name = f"taskapi_{uuid.uuid4().hex[:10]}"
    cluster.create_database(name)
    yield name
    cluster.drop_database(name)


@dataclass
class Call:
    """One request as its client saw it (times from time.perf_counter)."""

    kind: str
    sent: float
    done: float
    ok: bool
    detail: str = ""

    @property
    def latency(self) -> float:
        return self.done - self.sent


EXPECTED = {"create": 201, "update": 200, "get": 200, "list": 200, "delete": 204}


@dataclass
class Client:
    """One user's client: creates, updates, reads, lists and deletes, one request at a time."""

    user: str
    bulk: list[int]  # tasks of the table that are the user's
    created: list[int] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    creates: int = 0
    deletes: int = 0

    def acks(self, since: float = 0.0) -> int:
        return sum(1 for c in self.calls if c.ok and c.sent >= since)

    def request(self, http: httpx.AsyncClient, n: int) -> tuple[str, httpx.Request] | None:
        headers = auth(self.user)
        own = f"{TASKS}/{self.bulk[n % len(self.bulk)]}"
        slot = n % 10
        if slot < 3:
            body = {"title": f"{self.user} new {n}"}
            return "create", http.build_request("POST", TASKS, json=body, headers=headers)
        if slot < 7:
            edit = {"title": f"{self.user} edit {n}", "completed": n % 2 == 0}
            return "update", http.build_request("PUT", own, json=edit, headers=headers)
        if slot == 7:
            return "get", http.build_request("GET", own, headers=headers)
        if slot == 8:
            page = {"completed": "false", "limit": "20"}
            return "list", http.build_request("GET", TASKS, params=page, headers=headers)
        if self.created:
            mine = f"{TASKS}/{self.created.pop(0)}"
            return "delete", http.build_request("DELETE", mine, headers=headers)
        return None

    async def run(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        for n in range(PER_CLIENT_MAX):
            if stop.is_set():
                return
            planned = self.request(http, n)
            if planned is None:
                continue
            kind, request = planned
            await asyncio.sleep(THINK)
            sent = time.perf_counter()
            try:
                response = await http.send(request)
            except httpx.TransportError as error:
                self.calls.append(Call(kind, sent, time.perf_counter(), False, repr(error)))
                continue
            ok = response.status_code == EXPECTED[kind]
            detail = "" if ok else f"{response.status_code} {response.text[:200]}"
            self.calls.append(Call(kind, sent, time.perf_counter(), ok, detail))
            if ok and kind == "create":
                self.created.append(response.json()["id"])
                self.creates += 1
            elif ok and kind == "delete":
                self.deletes += 1


def every_client_acked(clients: list[Client], count: int, since: float = 0.0) -> Callable[[], bool]:
    return lambda: all(c.acks(since) >= count for c in clients)


async def until(what: str, condition: Callable[[], bool], tasks: list[asyncio.Task[None]]) -> None:
    """Poll `condition` until it holds (fails at the deadline, or if the load ended)."""
    deadline = time.perf_counter() + PHASE_TIMEOUT
    while not condition():
        assert time.perf_counter() < deadline, f"no {what} in {PHASE_TIMEOUT}s"
        assert not all(t.done() for t in tasks), f"the load ended before {what}"
        await asyncio.sleep(0.02)  # polling interval


WAIT = re.compile(
    r"\[(?P<pid>\d+)\] (?P<app>[^:\n]*): LOG:  process \d+ (?P<what>still waiting for|acquired) "
    r"(?P<mode>\S+) on (?P<object>.+?) after (?P<ms>[\d.]+) ms"
)
# A statement of the migration's, simple or prepared (asyncpg's: parse, bind, execute).
DURATION = re.compile(
    rf"\] {MIGRATION_APP}: LOG:  duration: (?P<ms>[\d.]+) ms  "
    r"(?:statement|execute [^:]+):\s+(?P<sql>[^\n]+)"
)


@dataclass
class Wait:
    app: str
    mode: str
    object: str
    ms: float


def lock_waits(log: str) -> tuple[list[Wait], list[str]]:
    """Every lock wait of deadlock_timeout or more that ended with the lock, and the
    logged waits that did not end so (a timeout, a cancel)."""
    acquired: list[Wait] = []
    waiting: dict[str, str] = {}
    for match in WAIT.finditer(log):
        if match["what"] == "acquired":
            waiting.pop(match["pid"], None)
            acquired.append(Wait(match["app"], match["mode"], match["object"], float(match["ms"])))
        else:
            waiting[match["pid"]] = match.group(0)
    return acquired, list(waiting.values())


def longest(waits: list[Wait], app: str | None = None) -> float:
    return max((w.ms for w in waits if app is None or w.app == app), default=0.0)


def ms(value: float) -> str:
    """A logged wait's length; none logged means under deadlock_timeout (10 ms)."""
    return f"{value:.1f}ms" if value else "<10ms"


def step_report(step: Step, calls: list[Call], relations: dict[str, str]) -> str:
    """One step's figures: the requests that overlapped it, lock waits, its statements."""
    during = [c for c in calls if c.sent < step.ended and c.done > step.started]
    waits, _ = lock_waits(step.log)
    # CREATE/DROP INDEX CONCURRENTLY waiting for the load's transactions to end.
    for_transactions = [
        w for w in waits if w.app == MIGRATION_APP and "virtual transaction" in w.object
    ]
    statements = [(float(m["ms"]), m["sql"]) for m in DURATION.finditer(step.log)]
    ddl = [(t, sql) for t, sql in statements if re.match(r"(ALTER|CREATE|DROP) ", sql)]
    build = [t for t, sql in ddl if sql.startswith("CREATE INDEX CONCURRENTLY")]
    locking = [t for t, sql in ddl if "CONCURRENTLY" not in sql]
    lines = [
        f"  alembic {' '.join(step.args)}: process {step.seconds:.2f}s, "
        f"{len(ddl)} DDL statements {sum(t for t, _ in ddl) / 1000:.2f}s "
        f"(CREATE INDEX CONCURRENTLY {sum(build) / 1000:.2f}s, longest other "
        f"{max(locking, default=0):.1f}ms); requests_during={len(during)} "
        f"failed_during={sum(not c.ok for c in during)} "
        f"max_latency_during={max((c.latency for c in during), default=0):.3f}s; "
        f"lock waits>=10ms: {len(waits)}, max {ms(longest(waits))} (service "
        f"{ms(longest(waits, SERVICE_APP))}, migration {ms(longest(waits, MIGRATION_APP))}; "
        f"index build waiting for the load's transactions: {len(for_transactions)}x, max "
        f"{ms(longest(for_transactions))})"
    ]
    for wait in sorted(waits, key=lambda w: -w.ms)[:3]:
        what = re.sub(
            r"relation (\d+) of database \d+",
            lambda m: f"relation {relations.get(m[1], m[1])}",
            wait.object,
        )
        lines.append(f"    {wait.app or '-'}: {wait.mode} on {what} {wait.ms:.1f}ms")
    return "\n".join(lines)


async def serve_with_todays_code(url: str, client: Client) -> str:
    """Start a service of today's code on the migrated database; read one of the table's
    tasks, create one and read the change feed through it; what it answered."""
    service = ServiceProcess({**service_env(url), "LOG_LEVEL": "ERROR"})
    try:
        await asyncio.to_thread(service.start)
        headers = auth(client.user)
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
            old = await http.get(f"{TASKS}/{client.bulk[0]}", headers=headers)
            new = await http.post(TASKS, json={"title": "after the migration"}, headers=headers)
            feed = await http.get(f"{TASKS}/changes", params={"limit": "5"}, headers=headers)
    finally:
        service.stop()
    assert old.status_code == 200, old.text
    assert old.json()["version"] == 1
    assert old.headers["etag"] == '"1"'
    assert new.status_code == 201, new.text
    assert new.json()["version"] == 1
    assert feed.status_code == 200, feed.text
    assert len(feed.json()["changes"]) == 5
    return f"GET {old.status_code}, POST {new.status_code}, feed {feed.status_code}"


async def load_through_steps(
    pg: PrivateCluster,
    migrator_url: str,
    service: ServiceProcess,
    clients: list[Client],
    steps_args: tuple[tuple[str, str], ...],
) -> tuple[list[Step], float]:
    """Run the clients against the service; once warm, each step under the load, which
    goes on after it; return the steps (with their slice of the server's log) and how long
    the load ran."""
    stop = asyncio.Event()
    steps: list[Step] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30, limits=limits) as http:
        tasks = [asyncio.create_task(c.run(http, stop)) for c in clients]
        try:
            await until("warm load", every_client_acked(clients, ACKS_BEFORE), tasks)
            t_load = time.perf_counter()
            for args in steps_args:
                log_offset = len(pg.log_tail(10**10))
                step = await alembic(migrator_url, *args)
                steps.append(step)
                assert step.returncode == 0, step.output[-3000:]
                await until(
                    f"load after {' '.join(args)}",
                    every_client_acked(clients, ACKS_AFTER_EACH_STEP, since=step.ended),
                    tasks,
                )
                step.log = pg.log_tail(10**10)[log_offset:]
            t_end = time.perf_counter()
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    return steps, t_end - t_load


@pytest.mark.parametrize("revision", list(MIGRATIONS))
async def test_the_migration_is_online_under_the_write_load_of_the_service_before_it(
    cluster: PrivateCluster, database: str, tmp_path: Path, revision: str
) -> None:
    pg = cluster
    _, before = MIGRATIONS[revision]
    steps_args = (("upgrade", revision), ("downgrade", before), ("upgrade", revision))
    log_start = len(pg.log_tail(10**10))  # the cluster is the module's: this test's log
    url = pg.url("postgresql", dbname=database)
    migrator_url = pg.url("postgresql", dbname=database, user=MIGRATOR)
    lock_timeout = lock_timeout_ms()
    old_code = tmp_path / f"service-{before}"
    commit = code_before_migration(revision, old_code)

    t_fill = time.perf_counter()
    step = await alembic(url, "upgrade", before)
    assert step.returncode == 0, step.output
    await fill(url)
    fill_seconds = time.perf_counter() - t_fill

    admin = await asyncpg.connect(url, timeout=10)
    try:
        bulk = {
            f"bulk-{u}": [
                row["id"]
                for row in await admin.fetch(
                    "SELECT id FROM tasks WHERE user_id = $1 ORDER BY id LIMIT $2",
                    f"bulk-{u}",
                    BULK_IDS_PER_CLIENT,
                )
            ]
            for u in range(1, CLIENTS + 1)
        }
    finally:
        await admin.close()
    clients = [Client(user, ids) for user, ids in bulk.items()]

    env = service_env(f"{url}?application_name={SERVICE_APP}")
    env.update(
        LOG_LEVEL="ERROR",
        DB_POOL_SIZE=str(CLIENTS),
        DB_STATEMENT_TIMEOUT_SECONDS=str(lock_timeout / 1000),
    )
    service = ServiceProcess(env, cwd=old_code)
    try:
        await asyncio.to_thread(service.start)
        steps, load_seconds = await load_through_steps(
            pg, migrator_url, service, clients, steps_args
        )
        assert service.proc is not None
        assert service.proc.poll() is None, service.output()
    finally:
        service.stop()

    admin = await asyncpg.connect(url, timeout=10)
    try:
        revision_after, valid = await revision_and_indexes(admin)
        rows = await admin.fetchval("SELECT count(*) FROM tasks")
        relations = {
            str(row["oid"]): row["relname"]
            for row in await admin.fetch(
                "SELECT oid, relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            )
        }
    finally:
        await admin.close()
    to_head = await alembic(url, "upgrade", "head")  # today's service needs the head
    assert to_head.returncode == 0, to_head.output[-3000:]
    served = await serve_with_todays_code(url, clients[0])

    calls = [c for client in clients for c in client.calls]
    failed = [c for c in calls if not c.ok]
    before_calls = [c for c in calls if c.done < steps[0].started]
    expected_rows = ROWS + sum(c.creates for c in clients) - sum(c.deletes for c in clients)
    waits = [w for step in steps for w in lock_waits(step.log)[0]]
    unended = [w for step in steps for w in lock_waits(step.log)[1]]
    print(
        f"\n[online-migration {revision}] rows={ROWS} users={USERS} clients={CLIENTS} "
        f"service_code={commit} (the commit before {revision}) fill={fill_seconds:.1f}s "
        f"lock_timeout={lock_timeout:.0f}ms requests={len(calls)} failed={len(failed)} "
        f"load={load_seconds:.1f}s "
        f"max_latency_before={max(c.latency for c in before_calls):.3f}s "
        f"max_lock_wait={ms(longest(waits))}"
    )
    for step in steps:
        print(step_report(step, calls, relations))
    print(
        f"  after: revision={revision_after} every index of tasks valid={valid} rows={rows} "
        f"(expected {expected_rows}); today's service on it (at the head): {served}"
    )

    assert failed == [], [(c.kind, c.detail) for c in failed[:10]]
    assert unended == [], unended[:5]
    assert longest(waits) < lock_timeout, [w for w in waits if w.ms >= lock_timeout]
    assert "lock timeout" not in pg.log_tail(10**10)[log_start:]
    assert (revision_after, valid) == (revision, True)
    assert rows == expected_rows


# --------------------------------------------------------------------------
# what the load test found, pinned: a request in either lock order, a failed attempt, the
# index build's time
# --------------------------------------------------------------------------


@pytest.fixture(params=list(MIGRATIONS))
def revision(request: pytest.FixtureRequest) -> str:
    """The migration under test (the database starts at the revision before it)."""
    return str(request.param)


@pytest.fixture
async def at_before(cluster: PrivateCluster, database: str, revision: str) -> str:
    """A fresh database at the revision before `revision`, with a user and a hundred tasks;
    its URL."""
    url = cluster.url("postgresql", dbname=database)
    step = await alembic(url, "upgrade", MIGRATIONS[revision][1])
    assert step.returncode == 0, step.output
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(
            "INSERT INTO users (id, created_at, updated_at) VALUES ('u1', now(), now()); "
            "INSERT INTO tasks (title, user_id, created_at, updated_at) "
            "SELECT 'task ' || g, 'u1', now(), now() FROM generate_series(1, 100) g"
        )
    finally:
        await connection.close()
    return url


@pytest.fixture
async def admin(at_before: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(at_before, timeout=10)
    yield connection
    await connection.close()


@pytest.fixture
async def request_session(at_before: str) -> AsyncIterator[asyncpg.Connection]:
    """A session in the role of one of the service's requests."""
    connection = await asyncpg.connect(at_before, timeout=10)
    yield connection
    await connection.close()


INSERT_TASK = (
    "INSERT INTO tasks (title, user_id, created_at, updated_at) VALUES ('new', $1, now(), now())"
)
# The two orders in which the running service locks the two tables the migrations alter: a
# task's INSERT locks tasks, then users for its foreign key (every create); behind a
# transaction pooler a request of a user not yet known to the process provisions the user
# and creates the task in one transaction: users, then tasks.
SERVICE_ORDERS = {
    "tasks-then-users": ("UPDATE tasks SET title = title WHERE id = 1", "u1"),
    "users-then-tasks": (
        "INSERT INTO users (id, created_at, updated_at) VALUES ('u2', now(), now()) "
        "ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at",
        "u2",
    ),
}


@pytest.mark.parametrize("order", list(SERVICE_ORDERS))
async def test_the_migration_does_not_deadlock_with_a_request_in_either_lock_order(
    at_before: str,
    admin: asyncpg.Connection,
    request_session: asyncpg.Connection,
    order: str,
    revision: str,
) -> None:
    """A request holds its first table's lock when the migration starts, and needs the
    other one only once the migration waits: a migration that held one table's lock while
    waiting for the other's would close a cycle in one of the two orders (found by the load
    test of 0002: "deadlock detected", a failed request or a failed migration). A migration
    that needs neither lock the request holds may finish without waiting at all."""
    first, user = SERVICE_ORDERS[order]
    transaction = request_session.transaction()
    await transaction.start()
    await request_session.execute(first)
    step = asyncio.create_task(alembic(at_before, "upgrade", revision))
    committed = False
    try:
        await until_migration_waits(admin, step, may_end=True)
        async with asyncio.timeout(30):
            await request_session.execute(INSERT_TASK, user)
        await transaction.commit()
        committed = True
    finally:
        if not committed:
            await transaction.rollback()
        result = await step
    assert result.returncode == 0, result.output[-3000:]
    assert await revision_and_indexes(admin) == (revision, True)


async def test_a_migration_whose_index_build_failed_runs_again(
    at_before: str,
    admin: asyncpg.Connection,
    request_session: asyncpg.Connection,
    revision: str,
) -> None:
    """CREATE INDEX CONCURRENTLY waits for every transaction that holds an older snapshot;
    one that outlives `lock_timeout` makes it fail, leaving an INVALID index behind. Run
    again, the migration must start afresh and finish (not fail on what the first attempt
    already did)."""
    transaction = request_session.transaction(isolation="repeatable_read")
    await transaction.start()
    await request_session.fetchval("SELECT 1")  # a snapshot, and no lock on any table
    try:
        failed = await alembic(at_before, "upgrade", revision)
    finally:
        await transaction.rollback()
    assert failed.returncode != 0
    assert "lock timeout" in failed.output, failed.output[-3000:]
    assert await revision_and_indexes(admin) == (MIGRATIONS[revision][1], False)

    again = await alembic(at_before, "upgrade", revision)
    assert again.returncode == 0, again.output[-3000:]
    assert await revision_and_indexes(admin) == (revision, True)


async def test_the_index_build_is_bounded_by_lock_timeout_not_by_the_request_timeout(
    at_before: str,
    admin: asyncpg.Connection,
    request_session: asyncpg.Connection,
    revision: str,
) -> None:
    """An index built concurrently may take longer than a request may (a large table; here a
    wait for a transaction that holds an older snapshot): the migration's statements are
    bounded by `lock_timeout` for their waits, not by the service's
    DB_STATEMENT_TIMEOUT_SECONDS, which once cut the build after 10 s by default."""
    transaction = request_session.transaction(isolation="repeatable_read")
    await transaction.start()
    await request_session.fetchval("SELECT 1")  # a snapshot, and no lock on any table
    step = asyncio.create_task(
        alembic(at_before, "upgrade", revision, DB_STATEMENT_TIMEOUT_SECONDS="1")
    )
    try:
        waited = await until_migration_waits(admin, step, at_least=2.0)
    finally:
        await transaction.rollback()
    result = await step
    assert waited >= 2.0
    assert result.returncode == 0, result.output[-3000:]
    assert await revision_and_indexes(admin) == (revision, True)
