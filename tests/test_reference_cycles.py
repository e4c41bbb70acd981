"""A served request leaves nothing of itself in reference cycles.

Objects in a cycle outlive their request until Python's cyclic garbage collector runs; under load
it then frees tens of thousands of them at once, stalling every request in flight (a closure in the
edge middleware that referred to itself once made each collection take ~80 ms and the p99 of every
route ~110 ms). Reference counting alone must free each request's scope, protocol objects and the
edge's state.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskapi.requestctx import CHARGE_KEY, Charge
from tests.support.tokens import auth


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Rate limits on, with an address budget small enough that the edge's own 429 path runs.
    # Every per-request feature on: the access log in JSON and the metrics.
    return {
        "rate_limit_enabled": True,
        "rate_limit_anonymous_per_minute": 1,
        "rate_limit_burst": 10,
        "access_log": True,
        "log_format": "json",
        "metrics_enabled": True,
        "metrics_token": "m" * 32,
    }


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _request_garbage() -> list[object]:
    """What a full collection finds unreachable that belonged to a request: its scope (a dict
    holding the edge's charge) or the charge itself."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    found: list[object] = [
        o for o in gc.garbage if isinstance(o, Charge) or (isinstance(o, dict) and CHARGE_KEY in o)
    ]
    gc.set_debug(0)
    gc.garbage.clear()
    return found


@pytest.mark.usefixtures("no_automatic_gc")
async def test_requests_leave_no_reference_cycles(client: httpx.AsyncClient) -> None:
    alice = auth("alice")
    created = await client.post("/api/v1/tasks", json={"title": "t"}, headers=alice)
    assert created.status_code == 201
    task = created.json()["id"]
    _request_garbage()  # what the first requests created once (caches, compiled statements)

    statuses = [
        (await client.get("/health")).status_code,
        (await client.get(f"/api/v1/tasks/{task}", headers=alice)).status_code,
        (await client.get("/api/v1/tasks", headers=alice)).status_code,
        (await client.put(f"/api/v1/tasks/{task}", json={"title": "u"}, headers=alice)).status_code,
        (await client.post("/api/v1/tasks", json={"title": "v"}, headers=alice)).status_code,
        (await client.get(f"/api/v1/tasks/{task}")).status_code,  # no token
    ]
    # Unauthenticated requests that never reach authentication, past the address's budget:
    # the edge answers its own 429.
    for _ in range(12):
        statuses.append((await client.get("/nowhere")).status_code)
    assert statuses[:6] == [200, 200, 200, 200, 201, 401]
    assert 429 in statuses[6:], statuses

    assert _request_garbage() == []
