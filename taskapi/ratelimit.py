"""Per-user (and, unauthenticated, per-address) rate limits: GCRA, in memory or in Redis.

GCRA keeps one timestamp per key (the "theoretical arrival time"), so a check is O(1) in
memory and one atomic script call in Redis, where several instances share one limit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from taskapi.events import NO_EVENTS, Events

logger = logging.getLogger("taskapi.ratelimit")
_EPSILON = 1e-9  # float slack, so a bucket of exactly `burst` is never refused early


@dataclass(frozen=True, slots=True)
class Policy:
    """`per_minute` sustained, up to `burst` at once."""

    name: str
    per_minute: int
    burst: int
    interval: float = field(init=False)
    tolerance: float = field(init=False)
    header: str = field(init=False)
    header_bytes: bytes = field(init=False)

    def __post_init__(self) -> None:
        # Derived once: they are read on every request.
        interval = 60.0 / self.per_minute
        header = f'"{self.name}";q={self.per_minute};w=60'
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "tolerance", interval * self.burst)
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "header_bytes", header.encode())


class Decision(NamedTuple):
    """One request's verdict. A named tuple: made on every request, and a frozen
    dataclass costs three times as much to make."""

    allowed: bool
    remaining: int
    reset_after: float
    retry_after: float

    def _state(self, policy: Policy) -> str:
        return f'"{policy.name}";r={self.remaining};t={math.ceil(self.reset_after)}'

    def headers(self, policy: Policy) -> dict[str, str]:
        """`RateLimit` and `RateLimit-Policy` (IETF httpapi draft), plus `Retry-After`."""
        values = {"RateLimit-Policy": policy.header, "RateLimit": self._state(policy)}
        if not self.allowed:
            values["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return values

    def raw_headers(self, policy: Policy) -> list[tuple[bytes, bytes]]:
        """`headers()` of an allowed request, as ASGI header pairs."""
        return [
            (b"ratelimit-policy", policy.header_bytes),
            (b"ratelimit", self._state(policy).encode()),
        ]


def gcra(tat: float | None, now: float, policy: Policy) -> tuple[Decision, float | None]:
    """One GCRA step: the decision and the new stored timestamp (None: unchanged)."""
    tat = now if tat is None or tat < now else tat
    new_tat = tat + policy.interval
    if new_tat - now > policy.tolerance + _EPSILON:
        retry = new_tat - now - policy.tolerance
        return Decision(False, 0, tat - now, retry), None
    remaining = int((policy.tolerance - (new_tat - now)) / policy.interval + 1e-9)
    return Decision(True, remaining, new_tat - now, 0.0), new_tat


class RateLimiter(Protocol):
    async def hit(self, key: str, policy: Policy) -> Decision: ...

    async def aclose(self) -> None: ...


class MemoryRateLimiter:
    """Limits within one process; bounded by pruning keys whose buckets are full again."""

    def __init__(
        self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys
        self._clock = clock

    async def hit(self, key: str, policy: Policy) -> Decision:
        now = self._clock()
        decision, new_tat = gcra(self._tats.get(key), now, policy)
        if new_tat is not None:
            if len(self._tats) >= self._max_keys and key not in self._tats:
                self._prune(now)
            self._tats[key] = new_tat
        return decision

    def _prune(self, now: float) -> None:
        self._tats = {k: v for k, v in self._tats.items() if v > now}
        while len(self._tats) >= self._max_keys:  # all active: drop the oldest
            del self._tats[next(iter(self._tats))]

    async def aclose(self) -> None:
        return None


# Redis' own clock, so every instance agrees on "now".
_GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tolerance + 1e-9 then
  return {0, tostring(tat - now), tostring(new_tat - now - tolerance)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, tostring(new_tat - now), '0'}
"""


class RedisRateLimiter:
    """Limits shared by every instance using the same Redis; fails open if Redis is down."""

    def __init__(self, url: str, prefix: str = "taskapi:rl:", timeout: float = 0.5) -> None:
        from redis.asyncio import Redis

        self._redis: Any = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._script = self._redis.register_script(_GCRA_SCRIPT)
        self._prefix = prefix

    async def hit(self, key: str, policy: Policy) -> Decision:
        from redis.exceptions import RedisError

        try:
            allowed, reset_after, retry_after = await self._script(
                keys=[self._prefix + policy.name + ":" + key],
                args=[policy.interval, policy.tolerance],
            )
        except (RedisError, OSError) as error:
            logger.warning("rate limiter unavailable, allowing request: %s", type(error).__name__)
            return Decision(True, policy.burst, 0.0, 0.0)
        reset = float(reset_after)
        remaining = int((policy.tolerance - reset) / policy.interval + 1e-9)
        return Decision(bool(int(allowed)), max(0, remaining), reset, float(retry_after))

    async def aclose(self) -> None:
        await self._redis.aclose()


class RateLimits:
    """The service's two policies over one limiter; each refusal is reported to `events`."""

    def __init__(
        self, limiter: RateLimiter, user: Policy, anonymous: Policy, events: Events = NO_EVENTS
    ) -> None:
        self.limiter = limiter
        self.user = user
        self.anonymous = anonymous
        self.events = events

    async def charge_user(self, sub: str) -> Decision:
        decision = await self.limiter.hit("u:" + sub, self.user)
        if not decision.allowed:
            self.events.rate_limited(self.user.name)
        return decision

    async def charge_anonymous(self, address: str) -> Decision:
        decision = await self.limiter.hit("ip:" + address, self.anonymous)
        if not decision.allowed:
            self.events.rate_limited(self.anonymous.name)
        return decision

    async def aclose(self) -> None:
        await self.limiter.aclose()


def build_rate_limits(
    enabled: bool,
    per_minute: int,
    burst: int,
    anonymous_per_minute: int,
    redis_url: str | None,
    events: Events = NO_EVENTS,
) -> RateLimits | None:
    """Rate limits from settings: None when disabled, Redis-backed when `redis_url` is set."""
    if not enabled:
        return None
    limiter: RateLimiter = RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()
    return RateLimits(
        limiter,
        Policy("user", per_minute, burst),
        Policy("anonymous", anonymous_per_minute, max(1, min(burst, anonymous_per_minute))),
        events,
    )
