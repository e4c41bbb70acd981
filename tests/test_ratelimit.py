"""Rate limits: per user, per address when unauthenticated, shared through Redis."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager

from taskapi.app import create_app
from taskapi.ratelimit import MemoryRateLimiter, Policy, gcra
from tests.conftest import make_settings
from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
REDIS_URL = "redis://127.0.0.1:6379/0"
LIMITS = {
    "rate_limit_enabled": True,
    "rate_limit_per_minute": 60,
    "rate_limit_burst": 3,
    "rate_limit_anonymous_per_minute": 2,
}


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the limiter does not depend on the database


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(LIMITS)


def test_gcra_allows_the_burst_then_one_per_interval() -> None:
    policy = Policy("user", per_minute=60, burst=3)
    tat = None
    decisions = []
    for _ in range(4):
        decision, new_tat = gcra(tat, 100.0, policy)
        tat = new_tat if new_tat is not None else tat
        decisions.append(decision)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].retry_after == pytest.approx(1.0)
    assert gcra(tat, 101.0, policy)[0].allowed  # one interval later, one more


async def test_memory_limiter_stays_bounded() -> None:
    now = [0.0]
    limiter = MemoryRateLimiter(max_keys=100, clock=lambda: now[0])
    policy = Policy("user", per_minute=60, burst=1)
    for i in range(1000):
        now[0] += 0.001
        assert (await limiter.hit(f"k{i}", policy)).allowed
    assert len(limiter._tats) <= 100


async def test_user_over_the_limit_gets_429_with_headers(client: httpx.AsyncClient) -> None:
    alice = auth(f"alice-{uuid.uuid4().hex}")
    for remaining in (2, 1, 0):
        response = await client.get(TASKS, headers=alice)
        assert response.status_code == 200
        assert response.headers["ratelimit-policy"] == '"user";q=60;w=60'
        assert response.headers["ratelimit"].startswith(f'"user";r={remaining};t=')
    limited = await client.get(TASKS, headers=alice)
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit"].startswith('"user";r=0')
    # Another user is not affected.
    assert (await client.get(TASKS, headers=auth("bob"))).status_code == 200


async def test_unauthenticated_floods_are_limited_per_address(client: httpx.AsyncClient) -> None:
    bad = {"Authorization": "Bearer not-a-token"}
    codes = [(await client.get(TASKS, headers=bad)).status_code for _ in range(4)]
    assert codes == [401, 401, 429, 429]
    # A valid user from the same address still gets through.
    assert (await client.get(TASKS, headers=auth("carol"))).status_code == 200


async def test_deletes_carry_rate_limit_headers(client: httpx.AsyncClient) -> None:
    headers = auth(f"dora-{uuid.uuid4().hex}")
    task = (await client.post(TASKS, json={"title": "x"}, headers=headers)).json()
    response = await client.delete(f"{TASKS}/{task['id']}", headers=headers)
    assert response.status_code == 204
    assert "ratelimit" in response.headers


@pytest.fixture
async def redis_available() -> None:
    connection = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await connection.ping()
    except Exception:
        pytest.skip("Redis is not running on 127.0.0.1:6379 (apt-get install redis-server)")
    finally:
        await connection.aclose()


async def test_instances_sharing_redis_enforce_one_limit(
    redis_available: None, database_url: str
) -> None:
    settings = make_settings(database_url, **LIMITS, redis_url=REDIS_URL)
    first, second = create_app(settings), create_app(settings)
    headers = auth(f"erin-{uuid.uuid4().hex}")
    async with LifespanManager(first), LifespanManager(second):
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
            for a in (first, second)
        ]
        codes = [(await clients[i % 2].get(TASKS, headers=headers)).status_code for i in range(5)]
        for http in clients:
            await http.aclose()
    assert codes == [200, 200, 200, 429, 429]


async def test_redis_down_fails_open(database_url: str) -> None:
    settings = make_settings(database_url, **LIMITS, redis_url="redis://127.0.0.1:9/0")
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        codes = [(await http.get(TASKS, headers=auth("fay"))).status_code for _ in range(5)]
    assert codes == [200] * 5


@pytest.mark.parametrize(
    ("method", "path", "headers", "content", "status"),
    [
        ("GET", "/api/v1/nothing-here", {}, None, 404),
        ("DELETE", "/health", {}, None, 405),
        ("POST", TASKS, {"Content-Type": "text/plain"}, b"x", 415),
        ("POST", TASKS, {"Content-Length": "999999999"}, b"", 413),
        ("GET", TASKS, {"X-Big": "x" * 17_000}, None, 431),
        ("GET", "/openapi.json", {}, None, 200),
    ],
)
async def test_every_unauthenticated_request_is_charged_to_its_address(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    content: bytes | None,
    status: int,
) -> None:
    """404 floods and 405/413/415/431 traffic cost the client address, as failed
    authentications do: two pass (the anonymous burst), then 429 with Retry-After."""
    codes = []
    for _ in range(4):
        response = await client.request(method, path, headers=headers, content=content)
        codes.append(response.status_code)
    assert codes == [status, status, 429, 429], codes
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["code"] == "RATE_LIMITED"
    # An authenticated user from the same address is charged to the user instead.
    assert (await client.get(TASKS, headers=auth("gina"))).status_code == 200


async def test_liveness_and_preflights_are_not_charged(client: httpx.AsyncClient) -> None:
    """A load balancer's liveness checks and a browser's CORS preflights cost nothing."""
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "PUT",
    }
    for _ in range(5):
        assert (await client.get("/health")).status_code == 200
        assert (await client.options(f"{TASKS}/1", headers=preflight)).status_code == 200
