"""The whole front-end path in headless Chromium: Better Auth's origin calling the API's.

A real Better Auth server (tests/betterauth, EdDSA keys) serves a test page from its own
origin; a real `uvicorn main:app` on another origin is configured with Better Auth's JWKS_URL
only (no shared secret) and that origin in CORS_ORIGINS. The page signs up, out and in with
Better Auth's client, takes the JWT from /api/auth/token and, through the typed client
(clients/typescript, bundled by esbuild), creates, lists (two pages by the Link cursor), reads,
updates (with the ETag it read as If-Match, after a stale one is refused with 412), filters
and deletes tasks, and reads a 401 as the browser sees it. Each of those calls is cross-origin
with Authorization: the browser preflights it, and the page can read only the headers the API
exposes (Location, Link, RateLimit, RateLimit-Policy, X-Request-ID, ETag).

The page writes what it saw into the DOM; the test waits for it with a deadline and asserts on
it, on the requests the browser recorded, and on the user row the API provisioned.

Without Node.js or Chromium this test skips locally; with CI=true it fails instead.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.faults._support import TASKS, ServiceProcess
from tests.support.betterauth import BetterAuthServer, start_or_skip
from tests.support.chromium import Page

PASSWORD = "correct-horse-battery-7"
PAGE_DEADLINE = 60.0


@pytest.fixture(scope="module")
def betterauth() -> Iterator[BetterAuthServer]:
    """Better Auth (EdDSA, its default) serving the browser test page under /app/."""
    server = start_or_skip("EdDSA", serve_test_page=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e") / "api.db"


@pytest.fixture(scope="module")
def api(betterauth: BetterAuthServer, api_database: Path) -> Iterator[ServiceProcess]:
    """The API as production runs it behind Better Auth: JWKS only, one allowed origin."""
    process = ServiceProcess(
        env={
            "DATABASE_URL": "",
            "SQLITE_PATH": str(api_database),
            "JWT_SECRET": "",
            "JWKS_URL": betterauth.jwks_url,
            "CORS_ORIGINS": betterauth.base_url,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_ENABLED": "true",
        }
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_front_end_path_across_origins(
    betterauth: BetterAuthServer,
    api: ServiceProcess,
    api_database: Path,
    page: Page,
    save_screenshot,
) -> None:
    assert betterauth.base_url != api.base_url  # two origins, as in production
    email = f"browser-{uuid.uuid4().hex[:10]}@example.com"
    query = urlencode(
        {"api": api.base_url, "email": email, "password": PASSWORD, "name": "Browser User"}
    )
    page.goto(f"{betterauth.base_url}/app/?{query}")
    done = page.wait_for("document.body.dataset.done", PAGE_DEADLINE, what="the page's result")
    result = json.loads(page.evaluate("document.getElementById('result').textContent"))
    shown = json.dumps(result, indent=2)[:6000]
    assert done == "ok", f"{shown}\nconsole: {page.console[-20:]}\napi: {api.output()}"
    assert all(step["ok"] for step in result["steps"]), shown

    # The JWT is Better Auth's own (EdDSA, from its key set), and the API accepted it with
    # no shared secret configured: it was verified against JWKS_URL.
    assert result["jwt"]["alg"] == "EdDSA"
    assert result["jwt"]["kid"] in betterauth.published_kids()
    assert result["jwt"]["iss"] == result["jwt"]["aud"] == betterauth.base_url
    user_id = result["user"]["id"]
    with sqlite3.connect(api_database) as db:
        rows = db.execute("SELECT id, email, name FROM users").fetchall()
    assert rows == [(user_id, email, "Browser User")]

    # The headers the page could read across origins.
    created = result["create"]["headers"]
    assert created["Location"] == f"{TASKS}/{result['created'][-1]}"
    assert created["RateLimit"], created
    assert created["RateLimit-Policy"], created
    assert created["X-Request-ID"], created
    listed = result["list"]["headers"]
    assert 'rel="next"' in (listed["Link"] or ""), listed
    assert listed["RateLimit"], listed
    assert [len(result["list"]["firstPage"]), len(result["list"]["secondPage"])] == [2, 1]
    assert result["anonymous"] == {"status": 401, "code": "MISSING_TOKEN"}
    assert result["delete"] == {"status": 204, "after": 404}
    assert [(t["title"], t["priority"], t["completed"]) for t in result["final"]] == [
        ("Write the report", "low", True),
        ("Review the pull request", "medium", False),
    ]

    # ETag: readable by the page exactly when the API sends one; then the page also made a
    # conditional write (If-Match, a header the preflight must allow): refused when stale,
    # applied with the ETag it read.
    token = betterauth.get_jwt(betterauth.sign_in(email, PASSWORD))
    report = result["final"][0]["id"]
    direct = httpx.get(
        f"{api.base_url}{TASKS}/{report}",
        headers={"Authorization": f"Bearer {token}", "Origin": betterauth.base_url},
    )
    assert direct.status_code == 200
    etag = direct.headers.get("etag")
    assert (result["read"]["headers"]["ETag"] is None) == (etag is None), shown
    assert result["update"]["etag"] == etag, shown
    conditional = [s["name"] for s in result["steps"] if "If-Match" in s["name"]]
    assert len(conditional) == (2 if etag else 0), conditional
    assert len(result["steps"]) == 17 + len(conditional) // 2, shown

    # What the browser did: requests to the two origins only, and a CORS preflight before the
    # API calls that need one (Authorization, JSON bodies, PUT and DELETE).
    assert page.foreign_requests({betterauth.base_url, api.base_url}) == []
    to_api = [r for r in page.requests.values() if r.origin == api.base_url]
    preflights = {r.url.removeprefix(api.base_url) for r in to_api if r.method == "OPTIONS"}
    assert {TASKS, f"{TASKS}/{report}"} <= {p.partition("?")[0] for p in preflights}, preflights
    for request in to_api:
        if request.method != "OPTIONS":
            assert (request.status or 599) < 500, request
    assert {r.method for r in to_api} >= {"OPTIONS", "GET", "POST", "PUT", "DELETE"}
    assert page.exceptions == []

    save_screenshot(page, "browser-e2e.png", full_page=True)
