"""Users are provisioned from verified tokens: created on first sight, kept current, on every
backend, including under 50 concurrent first requests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from taskapi.models import users
from tests.support.tokens import make_token

TASKS = "/api/v1/tasks"


def bearer(sub: str | None = "alice", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(sub, **claims)}"}


async def rows(app: FastAPI, sub: str | None = None) -> list[dict[str, Any]]:
    statement = select(users).order_by(users.c.id)
    if sub is not None:
        statement = statement.where(users.c.id == sub)
    async with app.state.engine.connect() as connection:
        result = await connection.execute(statement)
        return [dict(row._mapping) for row in result]


async def count(app: FastAPI) -> int:
    async with app.state.engine.connect() as connection:
        result = await connection.execute(select(func.count()).select_from(users))
        return int(result.scalar_one())


async def test_first_request_creates_user_from_claims(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    assert await rows(app, "user_abc") == []
    response = await client.get(
        TASKS,
        headers=bearer(
            "user_abc",
            email="abc@example.com",
            name="Abc Person",
            image="https://cdn.example.com/abc.png",
        ),
    )
    assert response.status_code == 200, response.text
    [row] = await rows(app, "user_abc")
    assert row["id"] == "user_abc"
    assert row["email"] == "abc@example.com"
    assert row["name"] == "Abc Person"
    assert row["avatar_url"] == "https://cdn.example.com/abc.png"
    assert row["created_at"] is not None
    assert row["updated_at"] is not None
    assert row["created_at"].tzinfo is not None
    assert await count(app) == 1


async def test_picture_claim_becomes_avatar_url(client: httpx.AsyncClient, app: FastAPI) -> None:
    response = await client.get(
        TASKS, headers=bearer("pic_user", picture="https://cdn.example.com/pic.jpg")
    )
    assert response.status_code == 200, response.text
    [row] = await rows(app, "pic_user")
    assert row["avatar_url"] == "https://cdn.example.com/pic.jpg"


async def test_first_write_request_also_provisions(client: httpx.AsyncClient, app: FastAPI) -> None:
    response = await client.post(TASKS, json={"title": "first"}, headers=bearer("writer"))
    assert response.status_code == 201, response.text
    assert response.json()["user_id"] == "writer"
    [row] = await rows(app, "writer")
    assert row["email"] == "writer@example.com"


async def test_token_without_email_or_name_works(client: httpx.AsyncClient, app: FastAPI) -> None:
    response = await client.get(TASKS, headers=bearer("no_email", email=..., name=...))
    assert response.status_code == 200, response.text
    [row] = await rows(app, "no_email")
    assert row["email"] is None
    assert row["name"] is None
    assert row["avatar_url"] is None
    created = await client.post(TASKS, json={"title": "t"}, headers=bearer("no_email", email=...))
    assert created.status_code == 201, created.text


async def test_two_users_with_the_same_email_are_two_rows(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    shared = "shared@example.com"
    first = await client.get(TASKS, headers=bearer("user_one", email=shared))
    second = await client.get(TASKS, headers=bearer("user_two", email=shared))
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    stored = await rows(app)
    assert [(row["id"], row["email"]) for row in stored] == [
        ("user_one", shared),
        ("user_two", shared),
    ]
    # Both keep working, and each sees only their own tasks.
    made = await client.post(
        TASKS, json={"title": "one's"}, headers=bearer("user_one", email=shared)
    )
    assert made.status_code == 201, made.text
    listed = await client.get(TASKS, headers=bearer("user_two", email=shared))
    assert listed.status_code == 200
    assert listed.json() == []


async def test_profile_changes_follow_the_token(client: httpx.AsyncClient, app: FastAPI) -> None:
    first = await client.get(
        TASKS,
        headers=bearer(
            "changer",
            email="old@example.com",
            name="Old Name",
            image="https://cdn.example.com/old.png",
        ),
    )
    assert first.status_code == 200, first.text
    [before] = await rows(app, "changer")
    assert (before["email"], before["name"]) == ("old@example.com", "Old Name")

    second = await client.get(
        TASKS,
        headers=bearer(
            "changer",
            email="new@example.com",
            name="New Name",
            image="https://cdn.example.com/new.png",
        ),
    )
    assert second.status_code == 200, second.text
    [after] = await rows(app, "changer")
    assert after["email"] == "new@example.com"
    assert after["name"] == "New Name"
    assert after["avatar_url"] == "https://cdn.example.com/new.png"
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] >= before["updated_at"]
    assert await count(app) == 1

    # Changing back is followed too (the provisioner's cache must not hide it).
    third = await client.get(
        TASKS, headers=bearer("changer", email="old@example.com", name="Old Name")
    )
    assert third.status_code == 200
    [again] = await rows(app, "changer")
    assert (again["email"], again["name"], again["avatar_url"]) == (
        "old@example.com",
        "Old Name",
        None,
    )


async def test_unchanged_profile_does_not_touch_the_row(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    for _ in range(3):
        response = await client.get(TASKS, headers=bearer("steady"))
        assert response.status_code == 200
    [row] = await rows(app, "steady")
    assert row["created_at"] == row["updated_at"]


async def test_fifty_concurrent_first_requests_make_one_row(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    token = make_token("racer", email="racer@example.com", name="Racer")
    headers = {"Authorization": f"Bearer {token}"}
    responses = await asyncio.gather(*(client.get(TASKS, headers=headers) for _ in range(50)))
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * 50, [r.text for r in responses if r.status_code != 200][:3]
    stored = await rows(app, "racer")
    assert len(stored) == 1
    assert stored[0]["email"] == "racer@example.com"
    assert await count(app) == 1


async def test_fifty_concurrent_first_writes_make_one_row(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    headers = bearer("racer_w", email="racer_w@example.com")
    responses = await asyncio.gather(
        *(client.post(TASKS, json={"title": f"t{i}"}, headers=headers) for i in range(50))
    )
    statuses = [response.status_code for response in responses]
    assert statuses == [201] * 50, [r.text for r in responses if r.status_code != 201][:3]
    assert len(await rows(app, "racer_w")) == 1
    listed = await client.get(TASKS, headers=headers, params={"limit": 500})
    assert len(listed.json()) == 50


@pytest.mark.parametrize(
    ("claims", "column"),
    [
        ({"name": "n" * 256}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"email": "e" * 320 + "@example.com"}, "email"),
        ({"email": "bad\x00@example.com"}, "email"),
        ({"image": "https://cdn.example.com/" + "a" * 2100}, "avatar_url"),
        ({"image": "https://cdn.example.com/\x00.png"}, "avatar_url"),
        ({"name": 12345}, "name"),
        ({"email": ["a@example.com"]}, "email"),
        ({"name": {"first": "A"}}, "name"),
    ],
    ids=[
        "long-name",
        "nul-name",
        "long-email",
        "nul-email",
        "long-image",
        "nul-image",
        "int-name",
        "list-email",
        "object-name",
    ],
)
async def test_unusable_profile_claims_are_stored_as_null(
    client: httpx.AsyncClient, app: FastAPI, claims: dict[str, Any], column: str
) -> None:
    response = await client.get(TASKS, headers=bearer("odd", **claims))
    assert response.status_code == 200, response.text
    [row] = await rows(app, "odd")
    assert row[column] is None
    created = await client.post(TASKS, json={"title": "works"}, headers=bearer("odd", **claims))
    assert created.status_code == 201, created.text


async def test_max_length_profile_claims_are_kept(client: httpx.AsyncClient, app: FastAPI) -> None:
    name = "n" * 255
    email = "e" * 308 + "@example.com"  # 320 characters
    assert len(email) == 320
    response = await client.get(TASKS, headers=bearer("edge", name=name, email=email))
    assert response.status_code == 200, response.text
    [row] = await rows(app, "edge")
    assert row["name"] == name
    assert row["email"] == email


async def test_unicode_profile_claims_round_trip(client: httpx.AsyncClient, app: FastAPI) -> None:
    response = await client.get(
        TASKS, headers=bearer("uni", name="Zoë Ærøskøbing 日本", email="zoë@exämple.com")
    )
    assert response.status_code == 200, response.text
    [row] = await rows(app, "uni")
    assert row["name"] == "Zoë Ærøskøbing 日本"
    assert row["email"] == "zoë@exämple.com"
