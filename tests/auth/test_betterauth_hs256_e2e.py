"""End to end, shared-secret mode: a real Better Auth signs HS256 through its jwt plugin's
`jwt.sign` hook (the README's "Connecting Better Auth" recipe), the service verifies with
JWT_SECRET alone (no JWKS)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from taskapi.models import users
from tests.support.betterauth import BetterAuthServer, start_or_skip
from tests.support.tokens import TEST_SECRET

TASKS = "/api/v1/tasks"


@pytest.fixture(scope="module")
def betterauth() -> Iterator[BetterAuthServer]:
    server = start_or_skip("HS256", hs256_secret=TEST_SECRET)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"jwt_secret": TEST_SECRET, "jwks_url": None}


async def test_better_auth_hs256_tokens_work_end_to_end(
    betterauth: BetterAuthServer, client: httpx.AsyncClient, app: FastAPI
) -> None:
    suffix = uuid.uuid4().hex[:8]
    alice = betterauth.sign_up(
        f"alice-{suffix}@example.com",
        "password-alice-1",
        "Alice",
        image="https://img.example/alice.png",
    )
    bob = betterauth.sign_up(f"bob-{suffix}@example.com", "password-bob-1", "Bob")
    alice_token, bob_token = betterauth.get_jwt(alice), betterauth.get_jwt(bob)
    assert jwt.get_unverified_header(alice_token)["alg"] == "HS256"
    claims = jwt.decode(
        alice_token, TEST_SECRET, algorithms=["HS256"], audience=betterauth.base_url
    )
    assert claims["sub"] == alice.user_id

    as_alice = {"Authorization": f"Bearer {alice_token}"}
    as_bob = {"Authorization": f"Bearer {bob_token}"}
    created = await client.post(TASKS, json={"title": "from better auth"}, headers=as_alice)
    assert created.status_code == 201
    task = created.json()
    assert task["user_id"] == alice.user_id
    assert (await client.get(f"{TASKS}/{task['id']}", headers=as_bob)).status_code == 404
    assert (await client.get(TASKS, headers=as_bob)).json() == []
    assert [t["id"] for t in (await client.get(TASKS, headers=as_alice)).json()] == [task["id"]]

    async with app.state.engine.connect() as connection:
        row = (
            (await connection.execute(sa.select(users).where(users.c.id == alice.user_id)))
            .mappings()
            .one()
        )
    assert (row["email"], row["name"], row["avatar_url"]) == (
        f"alice-{suffix}@example.com",
        "Alice",
        "https://img.example/alice.png",
    )


async def test_a_different_secret_is_refused(
    betterauth: BetterAuthServer, client: httpx.AsyncClient
) -> None:
    session = betterauth.sign_up(
        f"carol-{uuid.uuid4().hex[:8]}@example.com", "password-c-1", "Carol"
    )
    token = betterauth.get_jwt(session)
    forged = jwt.encode(
        jwt.decode(token, options={"verify_signature": False}),
        "another-secret-0123456789abcdef0123456789",
        algorithm="HS256",
    )
    response = await client.get(TASKS, headers={"Authorization": f"Bearer {forged}"})
    assert (response.status_code, response.json()["code"]) == (401, "INVALID_TOKEN")
