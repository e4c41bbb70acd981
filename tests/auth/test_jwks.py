"""Unit tests for taskapi.auth.jwks.JWKSCache (mock transport, fake clock, no sleeps)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from taskapi.auth.jwks import JWKSCache, JWKSKeyNotFoundError, JWKSUnavailableError

pytestmark = pytest.mark.asyncio

URL = "http://auth.test/api/auth/jwks"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ed25519_jwk(kid: str | None, *, alg: str | None = "EdDSA", **extra: Any) -> dict[str, Any]:
    """A public Ed25519 JWK shaped like Better Auth's."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes_raw()
    jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    if alg is not None:
        jwk["alg"] = alg
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(extra)
    return jwk


def rsa_jwk(kid: str) -> dict[str, Any]:
    """A public RSA JWK (RS256)."""
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(numbers))
    return {**data, "kid": kid, "alg": "RS256"}


def ec_jwk(kid: str) -> dict[str, Any]:
    """A public P-256 JWK (ES256)."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    return {**data, "kid": kid, "alg": "ES256"}


class FakeJWKS:
    """A JWKS endpoint behind httpx.MockTransport, whose keys and health tests control."""

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self.keys: list[dict[str, Any]] = keys if keys is not None else [ed25519_jwk("k1")]
        self.status = 200
        self.body: bytes | None = None  # overrides the JSON document when set
        self.headers: dict[str, str] = {}
        self.error: Exception | None = None
        self.requests = 0
        self.gate: asyncio.Event | None = None  # when set, responses wait for it
        self.arrived = asyncio.Event()  # set once a request has reached the endpoint

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        body = self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
        return httpx.Response(self.status, content=body, headers=self.headers)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


class FakeTime:
    """A settable clock plus a sleep that only returns when the test releases it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: asyncio.Queue[tuple[float, asyncio.Future[None]]] = asyncio.Queue()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.sleeps.put((delay, future))
        await future

    async def next_sleep(self) -> tuple[float, asyncio.Future[None]]:
        return await asyncio.wait_for(self.sleeps.get(), timeout=5)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def endpoint() -> FakeJWKS:
    return FakeJWKS()


@pytest_asyncio.fixture
async def make_cache(
    endpoint: FakeJWKS, fake_time: FakeTime
) -> AsyncIterator[Callable[..., JWKSCache]]:
    caches: list[JWKSCache] = []
    clients: list[httpx.AsyncClient] = []

    def make(**kwargs: Any) -> JWKSCache:
        client = endpoint.client()
        clients.append(client)
        options: dict[str, Any] = {
            "client": client,
            "ttl": 300.0,
            "refetch_cooldown": 10.0,
            "clock": fake_time.clock,
            "sleep": fake_time.sleep,
        }
        options.update(kwargs)
        cache = JWKSCache(URL, **options)
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.aclose()
    for client in clients:
        await client.aclose()


async def test_start_fetches_and_serves_key(make_cache: Callable[..., JWKSCache]) -> None:
    cache = make_cache()
    await cache.start()
    assert cache.fetch_count == 1
    key = await cache.get_key("k1")
    assert isinstance(key, jwt.PyJWK)
    assert key.key_id == "k1"
    assert key.algorithm_name == "EdDSA"
    assert cache.fetch_count == 1


async def test_flood_of_unknown_kids_causes_at_most_one_fetch(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS, fake_time: FakeTime
) -> None:
    cache = make_cache()
    await cache.start()
    before = cache.fetch_count

    # Within the cooldown: no fetch at all, every caller fails at once.
    results = await asyncio.gather(
        *(cache.get_key(f"random-{i}") for i in range(1000)), return_exceptions=True
    )
    assert all(isinstance(r, JWKSKeyNotFoundError) for r in results)
    assert cache.fetch_count == before

    # After the cooldown: the whole flood shares a single refetch.
    fake_time.now += 11
    results = await asyncio.gather(
        *(cache.get_key(f"other-{i}") for i in range(1000)), return_exceptions=True
    )
    assert all(isinstance(r, JWKSKeyNotFoundError) for r in results)
    assert cache.fetch_count == before + 1
    assert endpoint.requests == before + 1


async def test_cooldown_then_rotated_key_accepted(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS, fake_time: FakeTime
) -> None:
    cache = make_cache()
    await cache.start()
    endpoint.keys = [endpoint.keys[0], ed25519_jwk("k2")]  # rotation: k2 published

    fake_time.now += 5  # inside the cooldown (start's fetch was at t=1000)
    with pytest.raises(JWKSKeyNotFoundError):
        await cache.get_key("k2")
    assert cache.fetch_count == 1

    fake_time.now += 5  # exactly the cooldown later
    key = await cache.get_key("k2")
    assert key.key_id == "k2"
    assert cache.fetch_count == 2
    # The old key is still served (grace period) and nothing more is fetched.
    assert (await cache.get_key("k1")).key_id == "k1"
    assert cache.fetch_count == 2


async def test_unknown_kid_refetch_counts_towards_cooldown(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS, fake_time: FakeTime
) -> None:
    cache = make_cache()
    await cache.start()
    fake_time.now += 10
    with pytest.raises(JWKSKeyNotFoundError):
        await cache.get_key("nope")
    assert cache.fetch_count == 2
    endpoint.keys.append(ed25519_jwk("k2"))
    fake_time.now += 9.9
    with pytest.raises(JWKSKeyNotFoundError):
        await cache.get_key("k2")
    assert cache.fetch_count == 2
    fake_time.now += 0.1
    assert (await cache.get_key("k2")).key_id == "k2"
    assert cache.fetch_count == 3


async def test_endpoint_down_keeps_cached_keys(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS, fake_time: FakeTime
) -> None:
    cache = make_cache()
    await cache.start()
    for failure in ("status", "transport", "garbage", "empty"):
        endpoint.status, endpoint.error, endpoint.body = 200, None, None
        if failure == "status":
            endpoint.status = 503
        elif failure == "transport":
            endpoint.error = httpx.ConnectError("connection refused")
        elif failure == "garbage":
            endpoint.body = b"<html>not json</html>"
        else:
            endpoint.body = b'{"keys": []}'
        fake_time.now += 11
        before = cache.fetch_count
        with pytest.raises(JWKSKeyNotFoundError):
            await cache.get_key("unknown")  # forces a (failing) refetch
        assert cache.fetch_count == before + 1, failure
        assert (await cache.get_key("k1")).key_id == "k1", failure


async def test_nothing_cached_and_endpoint_down_is_unavailable(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS, fake_time: FakeTime
) -> None:
    endpoint.error = httpx.ConnectError("connection refused")
    cache = make_cache()
    await cache.start()  # never raises
    assert cache.fetch_count == 1
    with pytest.raises(JWKSUnavailableError):
        await cache.get_key("k1")  # within the cooldown: fails without fetching
    with pytest.raises(JWKSUnavailableError):
        await cache.get_key(None)
    assert cache.fetch_count == 1
    fake_time.now += 10
    with pytest.raises(JWKSUnavailableError):
        await cache.get_key("k1")  # one more attempt, which fails
    assert cache.fetch_count == 2
    endpoint.error = None
    fake_time.now += 10
    assert (await cache.get_key("k1")).key_id == "k1"


async def test_hanging_endpoint_times_out(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS
) -> None:
    endpoint.gate = asyncio.Event()  # never set: the endpoint never answers
    cache = make_cache(fetch_timeout=0.05)
    await asyncio.wait_for(cache.start(), timeout=5)
    with pytest.raises(JWKSUnavailableError):
        await asyncio.wait_for(cache.get_key("k1"), timeout=5)


async def test_oct_and_unusable_keys_ignored(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS
) -> None:
    good = ed25519_jwk("good")
    entries: list[Any] = [
        {"kty": "oct", "kid": "hmac", "k": _b64(b"s" * 32), "alg": "HS256"},
        {"kty": "oct", "kid": "hmac-noalg", "k": _b64(b"secret")},
        ed25519_jwk("enc", use="enc"),
        ed25519_jwk("ops", key_ops=["encrypt"]),
        {**ed25519_jwk("private"), "d": _b64(b"x" * 32)},
        {"kty": "RSA", "kid": "broken", "n": "!!!", "e": "AQAB"},
        {"kty": "EC", "kid": "bad-curve", "crv": "P-999", "x": "AA", "y": "AA"},
        ed25519_jwk("hs-alg", alg="HS256"),
        ed25519_jwk("none-alg", alg="none"),
        {"kid": "no-kty"},
        "not an object",
        ed25519_jwk(None),  # no kid: usable only for kid-less tokens
        good,
        rsa_jwk("rsa"),
        ec_jwk("ec"),
        ed25519_jwk("legacy", alg=None),  # older Better Auth omitted alg
    ]
    endpoint.keys = entries
    cache = make_cache()
    await cache.start()
    assert cache.kids == {"good", "rsa", "ec", "legacy"}
    for kid in (
        "hmac",
        "hmac-noalg",
        "enc",
        "ops",
        "private",
        "broken",
        "bad-curve",
        "hs-alg",
        "none-alg",
        "no-kty",
    ):
        with pytest.raises(JWKSKeyNotFoundError):
            await cache.get_key(kid)
    assert (await cache.get_key("rsa")).algorithm_name == "RS256"
    assert (await cache.get_key("ec")).algorithm_name == "ES256"
    assert (await cache.get_key("legacy")).algorithm_name == "EdDSA"


async def test_only_oct_keys_is_unavailable(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS
) -> None:
    endpoint.keys = [{"kty": "oct", "kid": "k1", "k": _b64(b"secret"), "alg": "HS256"}]
    cache = make_cache()
    await cache.start()
    with pytest.raises(JWKSUnavailableError):
        await cache.get_key("k1")


async def test_kid_none(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS, fake_time: FakeTime
) -> None:
    cache = make_cache()
    await cache.start()
    assert (await cache.get_key(None)).key_id == "k1"
    endpoint.keys.append(ed25519_jwk("k2"))
    fake_time.now += 10
    await cache.get_key("k2")
    with pytest.raises(JWKSKeyNotFoundError):
        await cache.get_key(None)


async def test_concurrent_callers_share_one_inflight_fetch(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS
) -> None:
    endpoint.gate = asyncio.Event()
    cache = make_cache()
    callers = [asyncio.create_task(cache.get_key("k1")) for _ in range(50)]
    await asyncio.wait_for(endpoint.arrived.wait(), timeout=5)  # the fetch is now blocked
    for _ in range(10):  # give every caller a chance to run up to its await
        await asyncio.sleep(0)
    assert not any(task.done() for task in callers)
    endpoint.gate.set()
    keys = await asyncio.gather(*callers)
    assert {key.key_id for key in keys} == {"k1"}
    assert cache.fetch_count == 1
    assert endpoint.requests == 1


async def test_cancelled_caller_does_not_cancel_shared_fetch(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS
) -> None:
    endpoint.gate = asyncio.Event()
    cache = make_cache()
    first = asyncio.create_task(cache.get_key("k1"))
    second = asyncio.create_task(cache.get_key("k1"))
    await asyncio.wait_for(endpoint.arrived.wait(), timeout=5)
    first.cancel()
    endpoint.gate.set()
    assert (await second).key_id == "k1"
    assert first.cancelled()
    assert cache.fetch_count == 1


async def test_background_refresh_picks_up_new_keys(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS, fake_time: FakeTime
) -> None:
    cache = make_cache(ttl=300.0)
    await cache.start()
    delay, wake = await fake_time.next_sleep()
    assert 0 < delay < 300.0  # refreshes before the TTL runs out
    endpoint.keys = [ed25519_jwk("k2")]  # k1 retired, k2 published

    fake_time.now += delay
    wake.set_result(None)
    delay2, _ = await fake_time.next_sleep()  # the loop went round: the refresh is done
    assert delay2 == delay
    assert cache.fetch_count == 2
    assert cache.kids == {"k2"}
    assert (await cache.get_key("k2")).key_id == "k2"
    assert cache.fetch_count == 2  # served from the refreshed cache, no refetch


async def test_background_refresh_failure_keeps_keys_and_retries_sooner(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS, fake_time: FakeTime
) -> None:
    cache = make_cache(ttl=300.0, refetch_cooldown=10.0)
    await cache.start()
    delay, wake = await fake_time.next_sleep()
    endpoint.status = 500
    fake_time.now += delay
    wake.set_result(None)
    retry, wake = await fake_time.next_sleep()
    assert retry < delay
    assert cache.fetch_count == 2
    assert (await cache.get_key("k1")).key_id == "k1"
    endpoint.status = 200
    endpoint.keys.append(ed25519_jwk("k2"))
    fake_time.now += retry
    wake.set_result(None)
    await fake_time.next_sleep()
    assert cache.kids == {"k1", "k2"}


async def test_oversized_body_refused(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS
) -> None:
    endpoint.keys = [ed25519_jwk("k1")] + [ed25519_jwk(f"pad{i}") for i in range(5000)]
    cache = make_cache()
    await cache.start()
    assert cache.fetch_count == 1
    with pytest.raises(JWKSUnavailableError):
        await cache.get_key("k1")


async def test_redirect_to_other_host_refused(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS
) -> None:
    endpoint.status = 302
    endpoint.headers = {"location": "http://evil.test/jwks"}
    cache = make_cache()
    await cache.start()
    assert endpoint.requests == 1  # the redirect was not followed
    with pytest.raises(JWKSUnavailableError):
        await cache.get_key("k1")


async def test_same_origin_redirect_followed(fake_time: FakeTime) -> None:
    keys = {"keys": [ed25519_jwk("k1")]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/jwks":
            return httpx.Response(307, headers={"location": "/.well-known/jwks.json"})
        return httpx.Response(200, json=keys)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        cache = JWKSCache(URL, client=client, clock=fake_time.clock, sleep=fake_time.sleep)
        await cache.start()
        assert (await cache.get_key("k1")).key_id == "k1"
        await cache.aclose()


async def test_malformed_documents_never_raise(
    make_cache: Callable[..., JWKSCache], endpoint: FakeJWKS, caplog: pytest.LogCaptureFixture
) -> None:
    for body in (b"[]", b'{"keys": "x"}', b"null", b'{"keys": [null, 1, []]}', b"\xff\xfe"):
        endpoint.body = body
        cache = make_cache()
        with caplog.at_level(logging.WARNING, logger="taskapi.auth.jwks"):
            await cache.start()
        with pytest.raises(JWKSUnavailableError):
            await cache.get_key("k1")


async def test_aclose_stops_background_task_and_owned_client() -> None:
    cache = JWKSCache("http://127.0.0.1:9/jwks", fetch_timeout=0.5)
    await cache.start()
    await cache.aclose()
    with pytest.raises(JWKSUnavailableError):
        await cache.get_key("k1")
