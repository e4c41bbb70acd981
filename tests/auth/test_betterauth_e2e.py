"""End to end with a real Better Auth server (jwt plugin): sign up, get JWTs, use the API.

For EdDSA, RS256 and ES256 (one Better Auth server per algorithm, shared by the module), on
every database backend: two users sign up the way a front end does, fetch their JWTs from
/api/auth/token and use them against this service. CRUD works, the users cannot see each
other's tasks, and users are provisioned from the token's claims. A key rotation is accepted
on first use after the refetch cooldown, and a JWKS outage does not break cached keys.

Without Node.js these tests skip locally; with CI=true they fail instead (nothing may skip).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI

from taskapi.models import users
from tests.support.betterauth import BetterAuthServer, Session, start_or_skip

TASKS = "/api/v1/tasks"
ALGORITHMS = ("EdDSA", "RS256", "ES256")
PASSWORD = "correct-horse-battery-1"
COOLDOWN = 10.0


@pytest.fixture(scope="module", params=ALGORITHMS)
def betterauth(request: pytest.FixtureRequest) -> Iterator[BetterAuthServer]:
    """A real Better Auth server signing with the parametrized algorithm."""
    server = start_or_skip(str(request.param))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings_overrides(betterauth: BetterAuthServer) -> dict[str, Any]:
    """JWKS-only mode (no shared secret): every accepted token went through the key set."""
    return {
        "jwks_url": betterauth.jwks_url,
        "jwt_secret": None,
        "jwks_refetch_cooldown_seconds": COOLDOWN,
    }


# -- helpers ---------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a token, for assertions about what Better Auth issued."""
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def sign_up(ba: BetterAuthServer, name: str, *, image: str | None = None) -> Session:
    """A new user with a unique email, signed up through Better Auth's sign-up endpoint."""
    email = f"{name.lower().replace(' ', '.')}-{uuid.uuid4().hex[:10]}@example.com"
    return ba.sign_up(email, PASSWORD, name, image=image)


async def user_rows(app: FastAPI) -> dict[str, dict[str, Any]]:
    async with app.state.engine.connect() as connection:
        result = await connection.execute(sa.select(users))
        return {row["id"]: dict(row) for row in result.mappings().all()}


def real_clock_plus(offset: float) -> Any:
    """A monotonic clock `offset` seconds ahead: time passing without sleeping."""
    return lambda: time.monotonic() + offset


def forged_token(kid: str, sub: str = "intruder") -> str:
    """An EdDSA token signed by a key Better Auth never published, naming `kid`."""
    key = ed25519.Ed25519PrivateKey.generate()
    now = int(time.time())
    return jwt.encode(
        {"sub": sub, "iat": now, "exp": now + 600}, key, algorithm="EdDSA", headers={"kid": kid}
    )


# -- CRUD, isolation, provisioning -----------------------------------------------------------


async def test_two_users_crud_isolation_and_provisioning(
    betterauth: BetterAuthServer, client: httpx.AsyncClient, app: FastAPI
) -> None:
    ba = betterauth
    alice = sign_up(ba, "Alice Liddell", image="https://img.example/alice.png")
    bob = sign_up(ba, "Bob Builder", image="https://img.example/bob.jpg?size=64")
    assert alice.user_id != bob.user_id
    alice_jwt, bob_jwt = ba.get_jwt(alice), ba.get_jwt(bob)

    # What Better Auth issued: the configured algorithm, a published kid, sub = user id.
    header, claims = unverified(alice_jwt)
    assert header["alg"] == ba.alg
    assert header["kid"] in ba.published_kids()
    assert claims["sub"] == alice.user_id
    assert claims["iss"] == claims["aud"] == ba.base_url
    A, B = bearer(alice_jwt), bearer(bob_jwt)

    # Create.
    response = await client.post(
        TASKS,
        json={"title": "Alice's task", "description": "from Better Auth", "priority": "high"},
        headers=A,
    )
    assert response.status_code == 201, response.text
    task = response.json()
    location = response.headers["location"]
    assert location == f"{TASKS}/{task['id']}"
    assert task["user_id"] == alice.user_id
    assert task["title"] == "Alice's task"

    # Read and list.
    response = await client.get(location, headers=A)
    assert response.status_code == 200, response.text
    assert response.json() == task
    response = await client.get(TASKS, headers=A)
    assert response.status_code == 200
    assert [t["id"] for t in response.json()] == [task["id"]]

    # Update.
    response = await client.put(
        location, json={"title": "Alice's task (done)", "completed": True}, headers=A
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["title"] == "Alice's task (done)"
    assert updated["completed"] is True
    assert updated["description"] == "from Better Auth"
    assert (await client.get(location, headers=A)).json() == updated

    # Isolation: Bob cannot see, change or delete Alice's task, nor list it.
    for method, body in (("GET", None), ("PUT", {"title": "hijacked"}), ("DELETE", None)):
        response = await client.request(method, location, json=body, headers=B)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["code"] == "TASK_NOT_FOUND"
    response = await client.get(TASKS, headers=B)
    assert response.status_code == 200
    assert response.json() == []
    response = await client.post(TASKS, json={"title": "Bob's task"}, headers=B)
    assert response.status_code == 201, response.text
    bob_task = response.json()
    assert bob_task["user_id"] == bob.user_id
    assert (await client.get(f"{TASKS}/{bob_task['id']}", headers=A)).status_code == 404
    assert [t["id"] for t in (await client.get(TASKS, headers=A)).json()] == [task["id"]]
    assert (await client.get(location, headers=A)).json() == updated  # unchanged by Bob

    # Delete.
    response = await client.delete(location, headers=A)
    assert response.status_code == 204, response.text
    response = await client.get(location, headers=A)
    assert response.status_code == 404
    assert (await client.get(TASKS, headers=A)).json() == []
    assert [t["id"] for t in (await client.get(TASKS, headers=B)).json()] == [bob_task["id"]]

    # Users were provisioned from the tokens' claims.
    rows = await user_rows(app)
    assert set(rows) == {alice.user_id, bob.user_id}
    for session, name, image in (
        (alice, "Alice Liddell", "https://img.example/alice.png"),
        (bob, "Bob Builder", "https://img.example/bob.jpg?size=64"),
    ):
        row = rows[session.user_id]
        assert row["email"] == session.user["email"]
        assert row["name"] == name
        assert row["avatar_url"] == image


async def test_user_without_image_and_profile_update(
    betterauth: BetterAuthServer, client: httpx.AsyncClient, app: FastAPI
) -> None:
    ba = betterauth
    carol = sign_up(ba, "Carol")
    response = await client.get(TASKS, headers=bearer(ba.get_jwt(carol)))
    assert response.status_code == 200, response.text
    row = (await user_rows(app))[carol.user_id]
    assert (row["email"], row["name"], row["avatar_url"]) == (
        carol.user["email"],
        "Carol",
        None,
    )

    # The front end changes the profile; the next token carries it, and so does the row.
    ba.update_user(carol, name="Carol Danvers", image="https://img.example/carol.png")
    token = ba.get_jwt(carol)
    assert unverified(token)[1]["name"] == "Carol Danvers"
    response = await client.get(TASKS, headers=bearer(token))
    assert response.status_code == 200, response.text
    row = (await user_rows(app))[carol.user_id]
    assert row["name"] == "Carol Danvers"
    assert row["avatar_url"] == "https://img.example/carol.png"


async def test_jwt_from_get_session_header_is_accepted(
    betterauth: BetterAuthServer, client: httpx.AsyncClient
) -> None:
    ba = betterauth
    dave = sign_up(ba, "Dave")
    response = await client.post(
        TASKS, json={"title": "via set-auth-jwt"}, headers=bearer(ba.get_session_jwt(dave))
    )
    assert response.status_code == 201, response.text
    assert response.json()["user_id"] == dave.user_id


async def test_tampered_better_auth_tokens_are_refused(
    betterauth: BetterAuthServer, client: httpx.AsyncClient
) -> None:
    ba = betterauth
    eve, victim = sign_up(ba, "Eve"), sign_up(ba, "Victim")
    token = ba.get_jwt(eve)
    head, _, signature = token.split(".")
    claims = unverified(token)[1]
    claims["sub"] = claims["id"] = victim.user_id
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    # The session token (opaque, not a JWT) is not a bearer token for this service either.
    for bad in (f"{head}.{forged_payload}.{signature}", eve.session_token):
        response = await client.get(TASKS, headers=bearer(bad))
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "INVALID_TOKEN"


# -- key rotation and outages ----------------------------------------------------------------


async def test_key_rotation_and_unknown_kid_flood(
    betterauth: BetterAuthServer,
    client: httpx.AsyncClient,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ba = betterauth
    jwks = app.state.jwks
    alice, bob = sign_up(ba, "Rotating Alice"), sign_up(ba, "Rotating Bob")
    old_alice, old_bob = ba.get_jwt(alice), ba.get_jwt(bob)  # both signed with the old key
    old_kid = unverified(old_alice)[0]["kid"]
    assert unverified(old_bob)[0]["kid"] == old_kid

    response = await client.get(TASKS, headers=bearer(old_alice))
    assert response.status_code == 200, response.text
    assert old_kid in jwks.kids
    fetches = jwks.fetch_count

    rotation = ba.rotate_keys()
    assert old_kid in rotation.previous
    new_alice = ba.get_jwt(alice)
    new_kid = unverified(new_alice)[0]["kid"]
    assert new_kid == rotation.kid != old_kid
    assert {old_kid, new_kid} <= set(ba.published_kids())  # old key kept for the grace period

    # The cooldown has passed (without sleeping): the new key is accepted on its first use.
    monkeypatch.setattr(jwks, "_clock", real_clock_plus(COOLDOWN + 1))
    response = await client.post(TASKS, json={"title": "after rotation"}, headers=bearer(new_alice))
    assert response.status_code == 201, response.text
    assert response.json()["user_id"] == alice.user_id
    assert jwks.fetch_count == fetches + 1
    assert {old_kid, new_kid} <= jwks.kids

    # A token signed with the old key, used for the first time now, still works: no fetch.
    response = await client.get(TASKS, headers=bearer(old_bob))
    assert response.status_code == 200, response.text
    assert jwks.fetch_count == fetches + 1

    # Another cooldown later, a flood of unknown kids costs at most one fetch in all.
    monkeypatch.setattr(jwks, "_clock", real_clock_plus(2 * (COOLDOWN + 1)))
    before = jwks.fetch_count
    tokens = [forged_token(secrets.token_urlsafe(16)) for _ in range(200)]
    for start in range(0, len(tokens), 20):
        responses = await asyncio.gather(
            *(client.get(TASKS, headers=bearer(t)) for t in tokens[start : start + 20])
        )
        for response in responses:
            assert response.status_code == 401, response.text
            assert response.json()["code"] == "INVALID_TOKEN"
    assert jwks.fetch_count - before <= 1

    # The legitimate tokens are unaffected.
    for token in (new_alice, old_alice):
        response = await client.get(TASKS, headers=bearer(token))
        assert response.status_code == 200, response.text
    assert [t["title"] for t in response.json()] == ["after rotation"]


async def test_cached_keys_keep_working_while_jwks_is_down(
    betterauth: BetterAuthServer,
    client: httpx.AsyncClient,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ba = betterauth
    jwks = app.state.jwks
    frank = sign_up(ba, "Frank")
    response = await client.get(TASKS, headers=bearer(ba.get_jwt(frank)))
    assert response.status_code == 200, response.text
    assert jwks.kids

    ba.set_jwks_status(503)
    try:
        # Past the cooldown and the cache TTL: refetches are attempted, and they fail.
        monkeypatch.setattr(jwks, "_clock", real_clock_plus(3600))
        before = jwks.fetch_count
        response = await client.get(TASKS, headers=bearer(forged_token("no-such-kid")))
        assert response.status_code == 401, response.text  # keys are cached: 401, not 503
        assert response.json()["code"] == "INVALID_TOKEN"
        assert jwks.fetch_count == before + 1  # the refetch happened and failed

        # A user whose token the service has never seen is verified with the cached key.
        grace = sign_up(ba, "Grace", image="https://img.example/grace.png")
        response = await client.post(
            TASKS, json={"title": "during outage"}, headers=bearer(ba.get_jwt(grace))
        )
        assert response.status_code == 201, response.text
        assert response.json()["user_id"] == grace.user_id
        assert (await user_rows(app))[grace.user_id]["avatar_url"] == (
            "https://img.example/grace.png"
        )
    finally:
        ba.set_jwks_status(None)
