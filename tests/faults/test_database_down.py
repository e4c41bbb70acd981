"""PostgreSQL stops, crashes, restarts or drops connections: the service answers 503 and heals.

Every test runs the app in-process against a private cluster that the test stops, kills
and restarts, with short timeouts (connect 1 s, statement 2 s, pool 2 s), so a request
made while the database is down must end within those bounds, as a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from taskapi.config import Settings
from tests.conftest import make_settings
from tests.faults._support import (
    CONNECT_TIMEOUT,
    POOL_TIMEOUT,
    RETRY_AFTER,
    SHORT_TIMEOUTS,
    STATEMENT_TIMEOUT,
    TASKS,
    Outcome,
    assert_unavailable,
    postgres,
    record,
    serve,
)
from tests.support.databases import alembic_upgrade
from tests.support.pgcluster import PrivateCluster, require_pg_bindir
from tests.support.tokens import auth

pytestmark = pytest.mark.slow

DBNAME = "taskapi"
USER = auth("fault-user")
# A request made while the database is down may queue for a pooled connection and then
# try to connect: it must be answered within these two timeouts.
OUTAGE_BOUND = CONNECT_TIMEOUT + POOL_TIMEOUT
# Any request at all (one in flight when the server goes away included).
ANY_REQUEST_BOUND = CONNECT_TIMEOUT + POOL_TIMEOUT + STATEMENT_TIMEOUT
SCHEDULING_SLACK = 0.5  # event-loop overhead on top of the sum of timeouts
IDLE_PING = 0.01  # seconds: shorter than any restart, so a restart always triggers the ping


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    require_pg_bindir()
    with PrivateCluster() as pg:
        pg.create_database(DBNAME)
        alembic_upgrade(pg.url("postgresql", dbname=DBNAME))
        yield pg


@pytest.fixture
def pg(cluster: PrivateCluster) -> PrivateCluster:
    """The cluster, running (a previous test may have left it stopped)."""
    if not cluster.is_running:
        cluster.start()
    else:
        cluster.wait_ready(30)
    return cluster


def settings_for(pg: PrivateCluster, **overrides: Any) -> Settings:
    return make_settings(pg.url("postgresql", dbname=DBNAME), **{**SHORT_TIMEOUTS, **overrides})


async def create(client: httpx.AsyncClient, title: str = "t") -> dict[str, Any]:
    response = await client.post(TASKS, json={"title": title}, headers=USER)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def terminate_app_connections(pg: PrivateCluster) -> int:
    """57P01: end every backend of the app's database, waiting until each has exited."""
    admin = await asyncpg.connect(pg.url("postgresql"), timeout=10)
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid, 5000) AS ok FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            DBNAME,
        )
    finally:
        await admin.close()
    assert all(row["ok"] for row in rows)
    return len(rows)


# --------------------------------------------------------------------------
# under load: stop / crash / restart
# --------------------------------------------------------------------------


class Load:
    """`clients` tasks creating and reading tasks in a loop until told to stop."""

    def __init__(self, client: httpx.AsyncClient, clients: int, per_client_max: int) -> None:
        self.client = client
        self.outcomes: list[Outcome] = []
        self.errors: list[BaseException] = []
        self.changed = asyncio.Condition()
        self.stop = asyncio.Event()
        self.tasks = [asyncio.create_task(self._worker(i, per_client_max)) for i in range(clients)]

    async def _append(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        async with self.changed:
            self.changed.notify_all()

    async def _worker(self, number: int, per_client_max: int) -> None:
        headers = auth(f"load-{number}")
        try:
            for n in range(per_client_max):
                if self.stop.is_set():
                    return
                sent = time.perf_counter()
                response = await self.client.post(
                    TASKS, json={"title": f"w{number}-{n}"}, headers=headers
                )
                await self._append(record("create", sent, response))
                if response.status_code == 201:
                    sent = time.perf_counter()
                    task_id = response.json()["id"]
                    response = await self.client.get(f"{TASKS}/{task_id}", headers=headers)
                    await self._append(record("get", sent, response))
        except BaseException as error:  # a transport-level failure is a finding too
            self.errors.append(error)
            raise
        finally:
            async with self.changed:
                self.changed.notify_all()

    async def until(self, predicate: Callable[[list[Outcome]], bool]) -> None:
        async with self.changed:
            await self.changed.wait_for(
                lambda: predicate(self.outcomes) or all(t.done() for t in self.tasks)
            )
        assert predicate(self.outcomes), "the load ended before the condition was met"

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        assert not self.errors, self.errors


def successes(outcomes: list[Outcome], since: float = 0.0) -> int:
    return sum(1 for o in outcomes if o.status < 300 and o.sent >= since)


@pytest.mark.parametrize("how", ["fast", "immediate", "kill"])
async def test_outage_under_load_answers_503_then_recovers(pg: PrivateCluster, how: str) -> None:
    async with asyncio.timeout(90), serve(settings_for(pg)) as (_app, client):
        load = Load(client, clients=20, per_client_max=5000)
        await load.until(lambda o: successes(o) >= 100)

        t_stop = time.perf_counter()
        if how == "kill":
            await asyncio.to_thread(pg.kill)
        else:
            await asyncio.to_thread(pg.stop, how)
        t_stopped = time.perf_counter()

        health = await client.get("/health")
        assert health.status_code == 200, health.text
        ready = await client.get("/ready")
        assert_unavailable(ready)

        await load.until(lambda o: sum(1 for x in o if x.sent >= t_stopped) >= 60)
        t_start = time.perf_counter()
        await asyncio.to_thread(pg.start)
        t_started = time.perf_counter()
        await load.until(lambda o: successes(o, since=t_started) >= 100)
        await load.finish()

        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text

    outcomes = load.outcomes
    statuses = {o.status for o in outcomes}
    assert statuses <= {200, 201, 503}, sorted(statuses)
    unavailable = [o for o in outcomes if o.status == 503]
    assert unavailable, "no request noticed the outage"
    assert {o.code for o in unavailable} == {"SERVICE_UNAVAILABLE"}
    assert {o.retry_after for o in unavailable} == {str(RETRY_AFTER)}

    during = [o for o in outcomes if t_stopped <= o.sent and o.done <= t_start]
    assert during
    assert {o.status for o in during} == {503}
    outage_max = max(o.latency for o in during)
    overall_max = max(o.latency for o in outcomes)
    assert outage_max < OUTAGE_BOUND, outage_max
    assert overall_max < ANY_REQUEST_BOUND, overall_max

    after = sorted((o for o in outcomes if o.sent >= t_started), key=lambda o: o.sent)
    failed_after = [o for o in after if o.status == 503]
    first_ok = min(o.done for o in after if o.status < 300)
    first_503 = min(o.done for o in unavailable)
    print(
        f"\n[db-down/{how}] requests={len(outcomes)} 503s={len(unavailable)} "
        f"time_to_first_503_after_stop_signal={first_503 - t_stop:.3f}s "
        f"stop_took={t_stopped - t_stop:.3f}s "
        f"max_latency_db_down={outage_max * 1000:.1f}ms "
        f"max_latency_overall={overall_max * 1000:.1f}ms "
        f"start_took={t_started - t_start:.3f}s "
        f"time_to_recover_after_ready={first_ok - t_started:.3f}s "
        f"failed_after_ready={len(failed_after)}/{len(after)}"
    )
    # Nothing pooled survives an outage under load (each disconnect invalidates the pool, and
    # no connection can be opened while the server is down): once PostgreSQL accepts
    # connections again, every new request succeeds.
    assert failed_after == [], failed_after[:5]


# --------------------------------------------------------------------------
# idle pool across a restart, and killed backends (57P01)
# --------------------------------------------------------------------------


async def warm_pool(client: httpx.AsyncClient, task_id: int, n: int = 6) -> None:
    responses = await asyncio.gather(
        *(client.get(f"{TASKS}/{task_id}", headers=USER) for _ in range(n))
    )
    assert [r.status_code for r in responses] == [200] * n


async def sequential_gets(client: httpx.AsyncClient, task_id: int, n: int = 10) -> list[int]:
    statuses = []
    for _ in range(n):
        response = await client.get(f"{TASKS}/{task_id}", headers=USER)
        if response.status_code != 200:
            assert_unavailable(response)
        statuses.append(response.status_code)
    return statuses


@pytest.mark.parametrize(
    ("idle_ping", "max_503s"),
    [(IDLE_PING, 0), (0, 1)],
    ids=["idle-ping-on", "idle-ping-off"],
)
async def test_restart_while_idle_costs_at_most_one_request(
    pg: PrivateCluster, idle_ping: float, max_503s: int
) -> None:
    """With the checkout ping a restart costs nothing; without it, at most one 503."""
    async with (
        asyncio.timeout(60),
        serve(settings_for(pg, db_idle_ping_seconds=idle_ping)) as (
            app,
            client,
        ),
    ):
        task = await create(client)
        await warm_pool(client, task["id"])
        pooled = postgres(app).pool_stats()["idle"]
        assert pooled >= 2
        idle_from = time.perf_counter()
        await asyncio.to_thread(pg.stop, "fast")
        await asyncio.to_thread(pg.start)
        assert time.perf_counter() - idle_from > IDLE_PING
        statuses = await sequential_gets(client, task["id"])
    print(f"\n[restart-idle/ping={idle_ping}] pooled={pooled} statuses={statuses}")
    # With the ping no request fails; without it, asyncpg usually notices the closed socket
    # first, and at most the first request after the restart may get a 503.
    failed = statuses.count(503)
    assert failed <= max_503s
    assert statuses == [503] * failed + [200] * (10 - failed)


@pytest.mark.parametrize(
    ("idle_ping", "max_503s"),
    [(IDLE_PING, 0), (0, 1)],
    ids=["idle-ping-on", "idle-ping-off"],
)
async def test_terminated_backends_57P01_sequential(
    pg: PrivateCluster, idle_ping: float, max_503s: int
) -> None:
    async with (
        asyncio.timeout(60),
        serve(settings_for(pg, db_idle_ping_seconds=idle_ping)) as (
            _app,
            client,
        ),
    ):
        task = await create(client)
        await warm_pool(client, task["id"])
        idle_from = time.perf_counter()
        terminated = await terminate_app_connections(pg)
        assert terminated >= 2
        assert time.perf_counter() - idle_from > IDLE_PING
        statuses = await sequential_gets(client, task["id"])
    print(f"\n[57P01/ping={idle_ping}] terminated={terminated} statuses={statuses}")
    # With the ping no request fails; without it, asyncpg usually notices the closed socket
    # first, and at most the first request after the restart may get a 503.
    failed = statuses.count(503)
    assert failed <= max_503s
    assert statuses == [503] * failed + [200] * (10 - failed)


async def test_terminated_backends_57P01_concurrent(pg: PrivateCluster) -> None:
    """Stale connections met by concurrent requests: 200 or 503, never 500; then all 200."""
    async with (
        asyncio.timeout(60),
        serve(settings_for(pg, db_idle_ping_seconds=0)) as (
            _app,
            client,
        ),
    ):
        task = await create(client)
        await warm_pool(client, task["id"], n=10)
        terminated = await terminate_app_connections(pg)
        assert terminated >= 2
        first = await asyncio.gather(
            *(client.get(f"{TASKS}/{task['id']}", headers=USER) for _ in range(20)),
            *(client.post(TASKS, json={"title": f"c{i}"}, headers=USER) for i in range(10)),
        )
        for response in first:
            if response.status_code >= 300:
                assert_unavailable(response)
        then = await asyncio.gather(
            *(client.get(f"{TASKS}/{task['id']}", headers=USER) for _ in range(20))
        )
    first_statuses = sorted(r.status_code for r in first)
    print(f"\n[57P01/concurrent] terminated={terminated} first={first_statuses}")
    assert [r.status_code for r in then] == [200] * 20


# --------------------------------------------------------------------------
# 57P03: "the database system is starting up / shutting down"
# --------------------------------------------------------------------------


async def test_requests_while_starting_up_are_503_or_succeed(pg: PrivateCluster) -> None:
    """Crash, then start without waiting: every request meets refusal, 57P03, or success."""
    async with asyncio.timeout(60), serve(settings_for(pg)) as (_app, client):
        await create(client)
        await asyncio.to_thread(pg.kill)  # crash recovery makes the start-up window longer
        pg.start(wait=False)
        statuses: list[int] = []
        for attempt in range(5000):  # bounded; each attempt fails fast until the server is up
            response = await client.post(TASKS, json={"title": f"s{attempt}"}, headers=USER)
            if response.status_code != 201:
                assert_unavailable(response)
            statuses.append(response.status_code)
            if response.status_code == 201:
                break
        await asyncio.to_thread(pg.wait_ready, 30)
        after = [
            (await client.post(TASKS, json={"title": "after"}, headers=USER)).status_code
            for _ in range(5)
        ]
    print(
        f"\n[57P03/start] requests_until_first_success={len(statuses)} 503s={statuses.count(503)}"
    )
    assert statuses[-1] == 201, "the service did not recover while the server started"
    assert after == [201] * 5


async def test_shutting_down_57P03_is_503(pg: PrivateCluster) -> None:
    """Smart shutdown with a session open: new connections get 57P03, the service a 503."""
    async with asyncio.timeout(60), serve(settings_for(pg)) as (app, client):
        task = await create(client)
        holder = await asyncpg.connect(pg.url("postgresql"), timeout=10)
        try:
            pg.stop_nowait("smart")
            # The postmaster handles the signal asynchronously: poll (bounded) until it
            # refuses new connections with 57P03.
            for _ in range(500):
                try:
                    probe = await asyncpg.connect(pg.url("postgresql"), timeout=5)
                except asyncpg.CannotConnectNowError:
                    break
                await probe.close()
            else:
                pytest.fail("the server never refused connections with 57P03")
            # every request now needs a new connection
            postgres(app).replace_connections_for_tests()
            responses = [
                await client.get(f"{TASKS}/{task['id']}", headers=USER),
                await client.post(TASKS, json={"title": "x"}, headers=USER),
                await client.get("/ready"),
            ]
            for response in responses:
                assert_unavailable(response)
            assert (await client.get("/health")).status_code == 200
        finally:
            await holder.close()
        await asyncio.to_thread(pg.stop, "smart")
        await asyncio.to_thread(pg.start)
        response = await client.get(f"{TASKS}/{task['id']}", headers=USER)
        assert response.status_code == 200, response.text


# --------------------------------------------------------------------------
# a frozen server: the timeouts, not refused connections, end each request
# --------------------------------------------------------------------------


@contextlib.contextmanager
def frozen(pg: PrivateCluster) -> Iterator[list[int]]:
    """SIGSTOP the postmaster and every backend (they stop answering, sockets stay open)."""
    pids = pg._processes_in_datadir()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("idle_ping", [10.0, IDLE_PING], ids=["idle-ping-10s", "idle-ping-on"])
async def test_frozen_server_answers_503_within_the_timeouts(
    pg: PrivateCluster, idle_ping: float
) -> None:
    """Nothing answers, nothing refuses: every request ends as a 503 within the bound that
    the pool, connect and statement timeouts promise, and the service heals on thaw.

    With the checkout ping due, a request may spend the statement timeout on the ping and
    the connect timeout on the reconnect: the bound is then pool + statement + connect.
    """
    bound = POOL_TIMEOUT + CONNECT_TIMEOUT + STATEMENT_TIMEOUT + SCHEDULING_SLACK
    settings = settings_for(pg, db_idle_ping_seconds=idle_ping)
    async with asyncio.timeout(60), serve(settings) as (_app, client):
        task = await create(client)
        await warm_pool(client, task["id"])

        async def timed(method: str, url: str, **kw: Any) -> tuple[httpx.Response, float]:
            sent = time.perf_counter()
            response = await client.request(method, url, headers=USER, **kw)
            return response, time.perf_counter() - sent

        with frozen(pg):
            results = await asyncio.gather(
                *(timed("GET", f"{TASKS}/{task['id']}") for _ in range(20)),
                *(timed("POST", TASKS, json={"title": f"f{i}"}) for i in range(10)),
            )
            ready_sent = time.perf_counter()
            ready = await client.get("/ready")
            ready_latency = time.perf_counter() - ready_sent
            assert (await client.get("/health")).status_code == 200
        latencies = sorted(latency for _, latency in results)
        for response, _ in results:
            assert_unavailable(response)
        assert_unavailable(ready)

        after = [
            (await client.get(f"{TASKS}/{task['id']}", headers=USER)).status_code for _ in range(20)
        ]
    print(
        f"\n[frozen/ping={idle_ping}] min_latency={latencies[0]:.2f}s "
        f"max_latency={latencies[-1]:.2f}s "
        f"(bound {bound:.1f}s) ready_latency={ready_latency:.2f}s after_thaw={after}"
    )
    assert latencies[-1] < bound
    assert after == [200] * 20
