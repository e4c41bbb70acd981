"""Asyncio cache of the public signing keys published at Better Auth's JWKS endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urljoin

import httpx
import jwt
from jwt.algorithms import HMACAlgorithm

from taskapi.config import url_origin
from taskapi.events import NO_EVENTS, Events

logger = logging.getLogger("taskapi.auth.jwks")

MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100
MAX_REDIRECTS = 3
# Fraction of the TTL after which the background task refreshes the keys.
REFRESH_FRACTION = 0.8
# Members that only private (or symmetric) keys carry: such entries are never used.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_ASYMMETRIC_KTY = frozenset({"RSA", "EC", "OKP"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class JWKSUnavailableError(Exception):
    """No key could be obtained: the JWKS endpoint is unreachable and nothing is cached."""


class JWKSKeyNotFoundError(Exception):
    """Keys are available, but none has the requested kid (after any allowed refetch)."""


class _FetchError(Exception):
    """A JWKS fetch failed; the cache is left as it was."""


def parse_jwks(document: Any) -> tuple[dict[str, jwt.PyJWK], tuple[jwt.PyJWK, ...]]:
    """Usable public signing keys of a JWKS document: (by kid, all); bad entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchError("JWKS document has no 'keys' list")
    by_kid: dict[str, jwt.PyJWK] = {}
    usable: list[jwt.PyJWK] = []
    for entry in document["keys"][:MAX_KEYS]:
        jwk = _parse_key(entry)
        if jwk is None:
            continue
        kid = jwk.key_id
        if kid is not None:
            if kid in by_kid:
                logger.warning("JWKS: duplicate kid %r ignored", kid)
                continue
            by_kid[kid] = jwk
        usable.append(jwk)
    return by_kid, tuple(usable)


def _parse_key(entry: Any) -> jwt.PyJWK | None:
    """One JWKS entry as a public verification key, or None if it must not be used."""
    if not isinstance(entry, dict):
        return None
    kty, kid = entry.get("kty"), entry.get("kid")
    reason: str | None = None
    if kty not in _ASYMMETRIC_KTY:
        reason = f"key type {kty!r} is not an asymmetric key type"
    elif kid is not None and (not isinstance(kid, str) or not kid):
        reason = "kid is not a non-empty string"
    elif entry.get("use", "sig") != "sig":
        reason = f"use is {entry.get('use')!r}, not 'sig'"
    elif "key_ops" in entry and (
        not isinstance(entry["key_ops"], list) or "verify" not in entry["key_ops"]
    ):
        reason = "key_ops does not allow 'verify'"
    elif _PRIVATE_MEMBERS.intersection(entry):
        reason = "entry carries private key material"
    if reason is None:
        try:
            jwk = jwt.PyJWK(entry)
        except Exception as exc:  # untrusted input: any parse failure just skips the key
            reason = f"unparseable ({type(exc).__name__}: {exc})"
        else:
            if isinstance(jwk.Algorithm, HMACAlgorithm) or jwk.algorithm_name == "none":
                reason = f"algorithm {jwk.algorithm_name!r} is not asymmetric"
            else:
                return jwk
    logger.warning("JWKS: ignoring key %r: %s", kid if isinstance(kid, str) else None, reason)
    return None


class JWKSCache:
    """Public keys from a JWKS URL: cached, refreshed in the background, refetched sparingly."""

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        ttl: float = 300.0,
        refetch_cooldown: float = 10.0,
        fetch_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_bytes: int = MAX_JWKS_BYTES,
        events: Events = NO_EVENTS,
    ) -> None:
        if ttl <= 0 or refetch_cooldown < 0 or fetch_timeout <= 0 or max_bytes <= 0:
            raise ValueError("ttl, fetch_timeout and max_bytes must be > 0, refetch_cooldown >= 0")
        self._url = url
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else httpx.AsyncClient(timeout=fetch_timeout, follow_redirects=False)
        )
        self._ttl = ttl
        self._cooldown = refetch_cooldown
        self._fetch_timeout = fetch_timeout
        self._clock = clock
        self._sleep = sleep
        self._max_bytes = max_bytes
        self._events = events
        self._by_kid: dict[str, jwt.PyJWK] = {}
        self._all: tuple[jwt.PyJWK, ...] = ()
        self._last_attempt: float | None = None
        self._last_success: float | None = None
        self._failures = 0
        self._fetch_count = 0
        self._inflight: asyncio.Task[bool] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def fetch_count(self) -> int:
        """Number of HTTP fetches attempted so far."""
        return self._fetch_count

    @property
    def kids(self) -> frozenset[str]:
        """The kids of the keys currently cached."""
        return frozenset(self._by_kid)

    async def start(self) -> None:
        """Fetch the keys once (best effort, never raises), then refresh them in the background."""
        if self._refresher is not None or self._closed:
            return
        await self._refresh()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="jwks-refresh")

    async def aclose(self) -> None:
        """Stop the background refresh and any fetch in flight; close the client if ours."""
        self._closed = True
        for task in (self._refresher, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = self._inflight = None
        if self._owns_client:
            await self._client.aclose()

    async def get_key(self, kid: str | None) -> jwt.PyJWK:
        """The key named `kid` (refetched at most once per cooldown); the only key if None."""
        key = self._lookup(kid)
        if key is not None:
            self._refresh_if_stale()
            return key
        if self._inflight is not None or self._cooldown_over():
            await self._refresh()
            key = self._lookup(kid)
            if key is not None:
                return key
        if not self._all:
            raise JWKSUnavailableError(f"no JWKS keys available from {self._url}")
        if kid is None:
            raise JWKSKeyNotFoundError("token has no kid and the JWKS holds several keys")
        raise JWKSKeyNotFoundError(f"no JWKS key with kid {kid!r}")

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        """The cached key for `kid`; for None, the single cached key if there is exactly one."""
        if kid is None:
            return self._all[0] if len(self._all) == 1 else None
        return self._by_kid.get(kid)

    def _cooldown_over(self) -> bool:
        """Whether a new fetch may start now."""
        if self._closed:
            return False
        return self._last_attempt is None or self._clock() - self._last_attempt >= self._cooldown

    def _refresh_if_stale(self) -> None:
        """Without a background task, start (but do not await) a refresh of stale keys."""
        if self._refresher is not None or self._inflight is not None:
            return
        if self._last_success is not None and self._clock() - self._last_success < self._ttl:
            return
        if self._cooldown_over():
            self._start_fetch()

    def _start_fetch(self) -> asyncio.Task[bool]:
        """Start a fetch (the caller has checked that none is in flight)."""
        self._last_attempt = self._clock()
        task = asyncio.create_task(self._fetch_and_store(), name="jwks-fetch")
        self._inflight = task
        task.add_done_callback(self._fetch_done)
        return task

    def _fetch_done(self, task: asyncio.Task[bool]) -> None:
        """Forget the finished in-flight fetch."""
        if self._inflight is task:
            self._inflight = None

    async def _refresh(self) -> bool:
        """Fetch now, or join the fetch in flight; True if it succeeded. Never raises."""
        task = self._inflight or self._start_fetch()
        # A cancelled caller must not cancel the fetch the other callers are waiting for.
        return await asyncio.shield(task)

    async def _refresh_loop(self) -> None:
        """Refresh before the TTL runs out; after failures, retry with a capped backoff."""
        while True:
            if self._failures:
                delay = min(self._ttl, max(self._cooldown, 1.0) * 2 ** min(self._failures - 1, 10))
            else:
                delay = self._ttl * REFRESH_FRACTION
            await self._sleep(delay)
            await self._refresh()

    async def _fetch_and_store(self) -> bool:
        """One fetch; on success replace the cached keys, on failure keep them."""
        self._fetch_count += 1
        try:
            async with asyncio.timeout(self._fetch_timeout):
                document = await self._download()
            by_kid, usable = parse_jwks(document)
            if not usable:
                raise _FetchError("JWKS holds no usable signing key")
        except Exception as exc:  # a failed fetch must never reach the caller
            self._failures += 1
            logger.warning(
                "JWKS fetch from %s failed (%s: %s); keeping %d cached key(s)",
                self._url,
                type(exc).__name__,
                exc,
                len(self._all),
            )
            self._events.jwks_fetched("failure")
            return False
        self._by_kid, self._all = by_kid, usable
        self._last_success = self._clock()
        self._failures = 0
        self._events.jwks_fetched("success")
        return True

    async def _download(self) -> Any:
        """GET the JWKS document (bounded size, same-origin redirects only) and decode it."""
        url = self._url
        origin = url_origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            async with self._client.stream(
                "GET",
                url,
                headers={"Accept": "application/json"},
                follow_redirects=False,
                timeout=self._fetch_timeout,
            ) as response:
                if response.status_code in _REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise _FetchError(f"HTTP {response.status_code} without Location")
                    url = urljoin(url, location)
                    if url_origin(url) != origin:
                        raise _FetchError(f"refusing redirect to another origin: {url}")
                    continue
                if response.status_code != 200:
                    raise _FetchError(f"HTTP {response.status_code}")
                body = await self._read_bounded(response)
            try:
                return json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _FetchError(f"JWKS is not valid JSON: {exc}") from None
        raise _FetchError("too many redirects")

    async def _read_bounded(self, response: httpx.Response) -> bytes:
        """The response body, refusing anything larger than max_bytes."""
        declared = _content_length(response.headers)
        if declared is not None and declared > self._max_bytes:
            raise _FetchError(f"JWKS too large ({declared} bytes)")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise _FetchError(f"JWKS larger than {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _content_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length header as an int, if present and valid."""
    value = headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
