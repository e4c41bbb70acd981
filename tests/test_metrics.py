"""Metrics: `GET /metrics` in the Prometheus text format, only when enabled and never
public (a bearer token or a port of its own); counts that match the requests sent, in one
process and summed over two real uvicorn workers."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from taskapi.app import ServiceApp, create_app
from taskapi.auth.jwks import JWKSCache
from taskapi.config import ConfigError, Settings, load_settings
from taskapi.db.postgres import PostgresDatabase
from taskapi.events import FEED_OUTCOMES
from taskapi.metrics import LATENCY_BUCKETS, Metrics, _AddableHistogram
from taskapi.tasks.contract import SyncToken
from tests.conftest import make_settings
from tests.support import databases
from tests.support.pgcluster import free_port
from tests.support.tokens import TEST_SECRET, auth
from tests.support.uvicorn import ROOT, Uvicorn

TASKS = "/api/v1/tasks"
ONE = TASKS + "/{task_id}"
FEED = TASKS + "/changes"
METRICS_TOKEN = "metrics-token-" + "0123456789abcdef" * 2
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}
REQUESTS = "taskapi_http_requests"
LATENCY = "taskapi_http_request_duration_seconds"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_by_label(samples: Samples) -> dict[tuple[str, str, str], float]:
    """taskapi_http_requests_total by (route, method, status)."""
    found = {}
    for (name, labels), value in samples.items():
        if name == REQUESTS + "_total":
            found[(dict(labels)["route"], dict(labels)["method"], dict(labels)["status"])] = value
    return found


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """In process, the counts do not depend on the database (the pool's test asks for
    PostgreSQL itself)."""
    return str(request.param)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"metrics_enabled": True, "metrics_token": METRICS_TOKEN}


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


# --- settings ------------------------------------------------------------------------------


def _main_exits(env: dict[str, str], tmp_path: Path) -> str:
    """Import `main` (what `uvicorn main:app` does first) with `env`; its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", "import main"],
        cwd=ROOT,
        env={
            **os.environ,
            "JWT_SECRET": TEST_SECRET,
            "SQLITE_PATH": str(tmp_path / "x.db"),
            "METRICS_TOKEN": "",
            "METRICS_PORT": "",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    return result.stderr


def test_enabled_without_token_or_port_refuses_to_start(tmp_path: Path) -> None:
    stderr = _main_exits({"METRICS_ENABLED": "true"}, tmp_path)
    assert "configuration error" in stderr
    assert "METRICS_TOKEN" in stderr
    assert "METRICS_PORT" in stderr


def test_a_production_metrics_token_must_be_long(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"_env_file": None, "jwt_secret": TEST_SECRET, "metrics_enabled": True}
    with pytest.raises(ValueError, match="METRICS_TOKEN is too short"):
        Settings(**base, environment="production", metrics_token="short")  # type: ignore[arg-type]
    Settings(**base, environment="development", metrics_token="short")  # type: ignore[arg-type]
    Settings(**base, environment="production", metrics_port=9100)  # type: ignore[arg-type]


def test_a_multiprocess_dir_in_dotenv_only_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings = make_settings(
        None, metrics_enabled=True, metrics_token=METRICS_TOKEN, prometheus_multiproc_dir="/x"
    )
    with pytest.raises(ConfigError, match=r"PROMETHEUS_MULTIPROC_DIR is set in \.env only"):
        create_app(settings)


def test_metrics_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_ENABLED", "true")
    monkeypatch.setenv("METRICS_PORT", "9100")
    monkeypatch.setenv("JWT_SECRET", TEST_SECRET)
    settings = load_settings()
    assert settings.metrics_port == 9100
    assert settings.metrics_token is None


# --- in process ----------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{}])
async def test_off_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers=SCRAPER)
    assert response.status_code == 404
    assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


async def test_a_scrape_needs_the_token(client: httpx.AsyncClient) -> None:
    missing = await client.get("/metrics")
    assert (missing.status_code, missing.json()["code"]) == (401, "MISSING_TOKEN")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    for header in (
        f"Bearer {METRICS_TOKEN}x",
        f"Basic {METRICS_TOKEN}",
        "Bearer",
        auth()["Authorization"],
    ):
        wrong = await client.get("/metrics", headers={"Authorization": header})
        assert (wrong.status_code, wrong.json()["code"]) == (401, "INVALID_TOKEN"), header
    assert (await client.get("/metrics", headers=SCRAPER)).status_code == 200
    assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


async def test_a_scrape_counts_the_requests_sent(client: httpx.AsyncClient) -> None:
    alice = auth("alice")
    sent: Counter[tuple[str, str, str]] = Counter()

    async def send(method: str, url: str, route: str, status: int, **kwargs: Any) -> Any:
        response = await client.request(method, url, **kwargs)
        assert response.status_code == status, response.text
        sent[(route, method, str(status))] += 1
        return response

    created = await send("POST", TASKS, TASKS, 201, json={"title": "a"}, headers=alice)
    one = f"{TASKS}/{created.json()['id']}"
    for _ in range(3):
        await send("GET", one, ONE, 200, headers=alice)  # the fast path
    await send("GET", f"{one}/", ONE, 200, headers=alice)
    await send("GET", f"{TASKS}/0{created.json()['id']}", ONE, 200, headers=alice)  # FastAPI
    await send("HEAD", one, ONE, 200, headers=alice)
    await send("GET", f"{TASKS}/999999", ONE, 404, headers=alice)
    await send("GET", f"{TASKS}/abc", ONE, 422, headers=alice)
    await send("GET", TASKS, TASKS, 401)
    await send("PUT", one, ONE, 200, json={"completed": True}, headers=alice)
    await send("PATCH", one, ONE, 200, json={"title": "b"}, headers=alice)
    await send("POST", one, ONE, 405, json={}, headers=alice)
    await send("DELETE", one, ONE, 204, headers=alice)
    await send("GET", "/health", "/health", 200)
    await send("GET", "/no/such/path", "(unmatched)", 404)
    await send("BREW", "/health", "/health", 405)  # an unknown method is OTHER
    sent[("/health", "OTHER", "405")] = sent.pop(("/health", "BREW", "405"))

    samples = await scrape(client)
    assert requests_by_label(samples) == sent
    by_route: Counter[tuple[str, str]] = Counter()
    for (route, method, _), count in sent.items():
        by_route[(route, method)] += count
    for (route, method), count in by_route.items():
        labels = {"route": route, "method": method}
        assert sample(samples, LATENCY + "_count", **labels) == count
        assert sample(samples, LATENCY + "_bucket", le="+Inf", **labels) == count
        buckets = [
            sample(samples, LATENCY + "_bucket", le=str(b), **labels) for b in LATENCY_BUCKETS
        ]
        assert buckets == sorted(buckets)  # cumulative
        assert sample(samples, LATENCY + "_sum", **labels) > 0
    # SQLite has no pool of the service's own: no gauges rather than false zeros.
    assert not any(name.startswith("taskapi_db_pool") for name, _ in samples)

    # The scrape itself is counted, once it is answered.
    again = requests_by_label(await scrape(client))
    assert again == {**sent, ("/metrics", "GET", "200"): 1}


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "metrics_enabled": True,
            "metrics_token": METRICS_TOKEN,
            "rate_limit_enabled": True,
            "rate_limit_per_minute": 1,
            "rate_limit_burst": 2,
            "rate_limit_anonymous_per_minute": 2,
        }
    ],
)
async def test_rate_limit_refusals_are_counted(client: httpx.AsyncClient) -> None:
    refused: Counter[str] = Counter()
    for _ in range(5):
        response = await client.get(TASKS, headers=auth("alice"))
        refused["user"] += response.status_code == 429
    for _ in range(4):
        response = await client.get(TASKS, headers={"Authorization": "Bearer not-a-token"})
        refused["anonymous"] += response.status_code == 429
    assert refused["user"] >= 1, refused
    assert refused["anonymous"] >= 1, refused
    # A scrape without the token is charged to the address, which is over its limit now...
    unauthorized = await client.get("/metrics")
    assert unauthorized.status_code == 429, unauthorized.text
    refused["anonymous"] += 1
    # ...and one with it is not charged at all: it is answered.
    samples = await scrape(client)
    for policy in ("user", "anonymous"):
        counted = sample(samples, "taskapi_rate_limit_refusals_total", policy=policy)
        assert counted == refused[policy], policy


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {"metrics_enabled": True, "metrics_token": METRICS_TOKEN, "tasks_fast_path": fast}
        for fast in (True, False)
    ],
    ids=["fast path", "FastAPI"],
)
async def test_replays_and_the_feeds_answers_are_counted(client: httpx.AsyncClient) -> None:
    alice = auth("alice")
    keyed = {**alice, "Idempotency-Key": "metrics-key-1"}
    first = await client.post(TASKS, json={"title": "once"}, headers=keyed)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    for _ in range(2):
        again = await client.post(TASKS, json={"title": "once"}, headers=keyed)
        assert again.status_code == 201, again.text
        assert again.headers["idempotent-replayed"] == "true"

    full = await client.get(FEED, headers=alice)  # a first sync: every task
    assert full.status_code == 200, full.text
    since = full.json()["next"]
    unchanged = await client.get(FEED, params={"since": since}, headers=alice)
    assert unchanged.json()["changes"] == [], unchanged.text
    assert (await client.post(TASKS, json={"title": "new"}, headers=alice)).status_code == 201
    changed = await client.get(FEED, params={"since": since}, headers=alice)
    assert len(changed.json()["changes"]) == 1, changed.text
    old = SyncToken(0, 0, int(time.time()) - 31 * 86_400).encode("alice")  # retention: 30 days
    expired = await client.get(FEED, params={"since": old}, headers=alice)
    assert expired.status_code == 410, expired.text

    samples = await scrape(client)
    assert sample(samples, "taskapi_idempotency_replays_total") == 2
    feed = {o: sample(samples, "taskapi_feed_requests_total", outcome=o) for o in FEED_OUTCOMES}
    assert feed == {"full": 1, "changes": 1, "unchanged": 1, "expired": 1}


async def test_jwks_fetches_and_failures_are_counted() -> None:
    metrics = Metrics()
    answers = [httpx.Response(200, json={"keys": [_EC_JWK]}), httpx.Response(500)]

    async def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        cache = JWKSCache(
            "http://127.0.0.1:9/jwks", client=http, refetch_cooldown=0.1, events=metrics
        )
        assert await cache._refresh() is True
        assert await cache._refresh() is False
        await cache.aclose()
    assert metrics.registry is not None
    samples = parse(generate_latest(metrics.registry).decode())
    assert sample(samples, "taskapi_jwks_fetches_total", outcome="success") == 1
    assert sample(samples, "taskapi_jwks_fetches_total", outcome="failure") == 1


_EC_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "kid": "k1",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}


async def test_the_service_counts_its_jwks_fetches(tmp_path: Path, sqlite_template: Path) -> None:
    closed = free_port()  # nothing listens there: the fetch at start fails
    url = f"sqlite:///{databases.copy_sqlite(sqlite_template, tmp_path / 't.db')}"
    settings = make_settings(
        url,
        jwks_url=f"http://127.0.0.1:{closed}/api/auth/jwks",
        jwks_fetch_timeout_seconds=2,
        metrics_enabled=True,
        metrics_token=METRICS_TOKEN,
    )
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            samples = await scrape(client)
    assert sample(samples, "taskapi_jwks_fetches_total", outcome="failure") == 1
    assert sample(samples, "taskapi_jwks_fetches_total", outcome="success") == 0


def test_adding_many_observations_equals_observing_each() -> None:
    seconds = [0.0004, 0.001, 0.003, 0.003, 0.2, 7.0, 12.0, 0.0099]
    observed = CollectorRegistry()
    one_by_one = Histogram("h", "h", ["route"], buckets=LATENCY_BUCKETS, registry=observed)
    added = CollectorRegistry()
    at_once = _AddableHistogram("h", "h", ["route"], buckets=LATENCY_BUCKETS, registry=added)
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for value in seconds:
        one_by_one.labels("r").observe(value)
        counts[sum(bound < value for bound in LATENCY_BUCKETS)] += 1
    at_once.labels("r").add(sum(seconds), counts)

    def without_created(registry: CollectorRegistry) -> Samples:
        text = generate_latest(registry).decode()
        return {k: v for k, v in parse(text).items() if not k[0].endswith("_created")}

    assert without_created(added) == without_created(observed)


# --- the database pool (PostgreSQL) --------------------------------------------------------


@pytest.fixture
async def pg_app(pg_url: str) -> AsyncIterator[ServiceApp]:
    settings = make_settings(
        pg_url, db_pool_size=2, metrics_enabled=True, metrics_token=METRICS_TOKEN
    )
    app = create_app(settings)
    async with LifespanManager(app):
        yield app
    await databases.truncate(pg_url)


async def test_pool_connections_in_use_and_waiters(pg_app: ServiceApp) -> None:
    assert pg_app.services is not None
    database = pg_app.services.db
    assert isinstance(database, PostgresDatabase)
    transport = httpx.ASGITransport(app=pg_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first, second, third = database.session(), database.session(), database.session()
        await first.__aenter__()
        await second.__aenter__()
        waiter = asyncio.create_task(third.__aenter__())
        for _ in range(100):  # loop turns, not time: it queues within one or two
            if database._slots.waiting():
                break
            await asyncio.sleep(0)
        assert database._slots.waiting() == 1
        busy = await scrape(client)
        await first.__aexit__(None, None, None)
        await waiter  # handed the connection just released
        await second.__aexit__(None, None, None)
        await third.__aexit__(None, None, None)
        idle = await scrape(client)
    assert sample(busy, "taskapi_db_pool_connections_in_use") == 2
    assert sample(busy, "taskapi_db_pool_waiting_requests") == 1
    assert sample(busy, "taskapi_db_pool_connections_open") == 2
    assert sample(busy, "taskapi_db_pool_size") == 2
    assert sample(idle, "taskapi_db_pool_connections_in_use") == 0
    assert sample(idle, "taskapi_db_pool_waiting_requests") == 0
    assert sample(idle, "taskapi_db_pool_connections_open") == 2


async def test_the_pool_size_gauge_follows_the_pool(pg_app: ServiceApp) -> None:
    """The adaptive pool (DB_POOL_SIZE unset) resizes itself: the gauge is the pool's size
    now, not the setting."""
    assert pg_app.services is not None
    database = pg_app.services.db
    assert isinstance(database, PostgresDatabase)
    database._slots.resize(17)
    transport = httpx.ASGITransport(app=pg_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        samples = await scrape(client)
    assert sample(samples, "taskapi_db_pool_size") == 17


# --- two real workers ----------------------------------------------------------------------


def _per_worker_requests(directory: Path) -> dict[str, float]:
    """taskapi_http_requests_total summed per worker, read from each worker's own file."""
    totals = {}
    for path in glob.glob(str(directory / "counter_*.db")):
        pid = Path(path).stem.rsplit("_", 1)[1]
        metrics = MultiProcessCollector.merge([path])
        totals[pid] = sum(
            s.value for m in metrics for s in m.samples if s.name == REQUESTS + "_total"
        )
    return totals


async def test_two_workers_one_scrape_sums_both(pg_url: str, tmp_path: Path) -> None:
    """`uvicorn --workers 2` in multiprocess mode, /metrics on METRICS_PORT (both workers
    listen there): requests until each worker has served some, then one scrape, answered
    by either worker, holds exactly the requests sent, the sum of both workers' own counts;
    the pool gauges are the sum over the live workers, withdrawn when they stop."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    # A gauge left by a worker that died without withdrawing it: a starting worker drops it.
    gone = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os; print(os.getpid())", stdout=subprocess.PIPE
    )
    pid = int((await gone.communicate())[0])
    stale = MmapedDict(str(directory / f"gauge_livesum_{pid}.db"))
    pool_size = "taskapi_db_pool_size"
    stale.write_value(mmap_key(pool_size, pool_size, [], [], "stale"), 100.0, 0.0)
    stale.close()
    metrics_port = free_port()
    env = {
        "DATABASE_URL": pg_url,
        "JWT_SECRET": TEST_SECRET,
        "ENVIRONMENT": "production",
        "CORS_ORIGINS": "http://localhost:3000",
        "RATE_LIMIT_ENABLED": "false",
        "DB_POOL_SIZE": "3",
        "METRICS_ENABLED": "true",
        "METRICS_PORT": str(metrics_port),
        "METRICS_TOKEN": "",
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "JWKS_URL": "",
        "REDIS_URL": "",
        "LOG_FORMAT": "",
    }
    args = ["--workers", "2", "--log-config", "uvicorn-logging.json"]
    try:
        with Uvicorn("main:app", env, args) as server:
            server.wait_for("Application startup complete", count=2)
            sent: Counter[tuple[str, str, str]] = Counter()
            alice = auth("alice")
            # A new connection per request, so that both workers take some.
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(
                base_url=server.base_url, timeout=30, limits=limits
            ) as client:
                created = await client.post(TASKS, json={"title": "t"}, headers=alice)
                assert created.status_code == 201
                sent[(TASKS, "POST", "201")] += 1
                one = f"{TASKS}/{created.json()['id']}"
                assert (await client.get("/metrics")).status_code == 404  # not on this port
                sent[("(unmatched)", "GET", "404")] += 1
                for _ in range(50):
                    replies = await asyncio.gather(
                        *(client.get(one, headers=alice) for _ in range(16))
                    )
                    assert all(r.status_code == 200 for r in replies)
                    sent[(ONE, "GET", "200")] += len(replies)
                    if len(workers := _per_worker_requests(directory)) == 2 and all(
                        workers.values()
                    ):
                        break
                assert len(workers) == 2, workers
                assert all(workers.values()), workers
            assert sum(workers.values()) == sum(sent.values())
            async with httpx.AsyncClient(timeout=30) as scraper:
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                response = await scraper.get(url)
                assert response.status_code == 200, response.text
                assert (await scraper.get(url.replace("/metrics", "/"))).status_code == 404
            samples = parse(response.text)
            assert requests_by_label(samples) == sent
            assert (
                sample(samples, LATENCY + "_count", route=ONE, method="GET")
                == sent[(ONE, "GET", "200")]
            )
            # The sum over the two live workers, without the dead one's.
            assert sample(samples, "taskapi_db_pool_size") == 2 * 3
            server.stop()
            lines = list(server.lines)
    finally:
        await databases.truncate(pg_url)
    assert not glob.glob(str(directory / "gauge_live*.db"))  # withdrawn as each stopped
    for line in lines:  # uvicorn's supervisor included (--log-config)
        assert isinstance(json.loads(line), dict), line
