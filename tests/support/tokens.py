"""Tokens signed the way a Better Auth shared-secret setup signs them."""

from __future__ import annotations

import time
from typing import Any

import jwt

TEST_SECRET = "test-secret-0123456789abcdef0123456789abcdef"
# Modules build their tokens when they are imported, at collection, and the whole suite takes
# well over ten minutes on a busy machine: a default token must outlive the run.
DEFAULT_TTL = 24 * 3600


def make_token(
    sub: str | None = "alice",
    *,
    secret: str = TEST_SECRET,
    algorithm: str = "HS256",
    ttl: int = DEFAULT_TTL,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """An HS256 token for `sub` (None leaves `sub` out); extra claims override defaults."""
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + ttl}
    if sub is not None:
        payload["sub"] = sub
        payload.setdefault("email", f"{sub}@example.com")
        payload.setdefault("name", sub.title())
    payload.update(claims)
    payload = {key: value for key, value in payload.items() if value is not ...}
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def auth(sub: str = "alice", **claims: Any) -> dict[str, str]:
    """Authorization header for `sub`."""
    return {"Authorization": f"Bearer {make_token(sub, **claims)}"}


# Registered claims a signed token may carry that the service must refuse with
# 401 INVALID_TOKEN (never a 500, never TOKEN_EXPIRED, never accepted): `exp`, `nbf`, `iat`
# that are not JSON numbers (RFC 7519's NumericDate), are booleans, are not finite, or lie
# outside years 1970..9999; and a `sub` without a non-space character. Each entry overrides
# the claims of an otherwise valid token.
MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z
BAD_REGISTERED_CLAIMS: dict[str, dict[str, Any]] = {
    "exp-10**400": {"exp": 10**400},
    "exp--10**400": {"exp": -(10**400)},
    "exp-1e300": {"exp": 1e300},
    "exp-after-year-9999": {"exp": MAX_NUMERIC_DATE + 1},
    "exp-digit-string": {"exp": "9999999999"},
    "exp-true": {"exp": True},
    "exp-infinity": {"exp": float("inf")},
    "exp-nan": {"exp": float("nan")},
    "exp-list": {"exp": [9999999999]},
    "nbf-digit-string": {"nbf": "0"},
    "nbf-true": {"nbf": True},
    "nbf-negative": {"nbf": -1},
    "nbf-10**400": {"nbf": 10**400},
    "nbf-null": {"nbf": None},
    "iat-digit-string": {"iat": "0"},
    "iat-false": {"iat": False},
    "iat--10**400": {"iat": -(10**400)},
    "iat--infinity": {"iat": float("-inf")},
    "sub-one-space": {"sub": " "},
    "sub-spaces": {"sub": "   "},
    "sub-ideographic-space": {"sub": "\u3000"},
}
