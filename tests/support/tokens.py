"""Tokens signed the way a Better Auth shared-secret setup signs them."""

from __future__ import annotations

import time
from typing import Any

import jwt

TEST_SECRET = "test-secret-0123456789abcdef0123456789abcdef"


def make_token(
    sub: str | None = "alice",
    *,
    secret: str = TEST_SECRET,
    algorithm: str = "HS256",
    ttl: int = 6 * 3600,  # module-level tokens (ALICE = auth("alice")) live for the whole run
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
