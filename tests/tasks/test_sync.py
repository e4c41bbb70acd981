"""Safe sync through HTTP: versions and conditional requests, PATCH, idempotent creates and
the change feed, on every backend (SQLite, PostgreSQL, PostgreSQL through PgBouncer)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import text

from taskapi.tasks.contract import SyncToken
from taskapi.tasks.maintenance import purge_expired
from tests.support.tasks import create
from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
CHANGES = f"{TASKS}/changes"
ALICE = auth("alice")
BOB = auth("bob")
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


# ---- versions and ETags -------------------------------------------------------------------


async def test_every_write_grows_the_version_and_the_etag(client: httpx.AsyncClient) -> None:
    task = await create(client, title="v")
    one = f"{TASKS}/{task['id']}"
    assert task["version"] == 1
    put = await client.put(one, json={"title": "v2"}, headers=ALICE)
    patch = await client.patch(one, json={"completed": True}, headers=ALICE)
    got = await client.get(one, headers=ALICE)
    assert [put.json()["version"], patch.json()["version"], got.json()["version"]] == [2, 3, 3]
    assert [put.headers["etag"], patch.headers["etag"], got.headers["etag"]] == [
        '"2"',
        '"3"',
        '"3"',
    ]
    listed = (await client.get(TASKS, headers=ALICE)).json()
    assert listed[0]["version"] == 3


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [('"1"', 304), ('W/"1"', 304), ('"7", "1"', 304), ("*", 304), ('"2"', 200), ('W/"2"', 200)],
)
async def test_a_conditional_get_is_304_with_the_etag_and_no_body(
    client: httpx.AsyncClient, if_none_match: str, status: int
) -> None:
    task = await create(client)
    response = await client.get(
        f"{TASKS}/{task['id']}", headers={**ALICE, "If-None-Match": if_none_match}
    )
    assert response.status_code == status
    assert response.headers["etag"] == '"1"'
    if status == 304:
        assert response.content == b""
        assert "content-type" not in response.headers
    else:
        assert response.json() == task


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("if_match", ['"2"', 'W/"1"', '"0", "5"'])
async def test_a_write_whose_if_match_is_stale_is_412_and_changes_nothing(
    client: httpx.AsyncClient, method: str, if_match: str
) -> None:
    task = await create(client, title="before")
    one = f"{TASKS}/{task['id']}"
    response = await client.request(
        method,
        one,
        json={"title": "after"} if method != "DELETE" else None,
        headers={**ALICE, "If-Match": if_match},
    )
    assert response.status_code == 412, response.text
    assert response.json()["code"] == "PRECONDITION_FAILED"
    assert (await client.get(one, headers=ALICE)).json() == task


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("if_match", ['"1"', "*", '"9", "1"'])
async def test_a_write_whose_if_match_names_the_version_applies(
    client: httpx.AsyncClient, method: str, if_match: str
) -> None:
    task = await create(client, title="before")
    response = await client.request(
        method,
        f"{TASKS}/{task['id']}",
        json={"title": "after"} if method != "DELETE" else None,
        headers={**ALICE, "If-Match": if_match},
    )
    assert response.status_code == (204 if method == "DELETE" else 200), response.text
    if method != "DELETE":
        assert response.json()["title"] == "after"
        assert response.headers["etag"] == '"2"'


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
@pytest.mark.parametrize("value", ['"1"', "*", '"2"'])
async def test_another_users_task_stays_404_whatever_the_preconditions(
    client: httpx.AsyncClient, method: str, header: str, value: str
) -> None:
    task = await create(client, title="alice's")
    response = await client.request(
        method,
        f"{TASKS}/{task['id']}",
        json={"title": "bob was here"} if method in ("PUT", "PATCH") else None,
        headers={**BOB, header: value},
    )
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "TASK_NOT_FOUND"
    assert (await client.get(f"{TASKS}/{task['id']}", headers=ALICE)).json() == task


@pytest.mark.parametrize("value", ["1", '"x"', '"1" "2"', ",".join(['"1"'] * 9), '"-1"'])
async def test_a_malformed_precondition_is_422(client: httpx.AsyncClient, value: str) -> None:
    task = await create(client)
    response = await client.put(
        f"{TASKS}/{task['id']}", json={"title": "x"}, headers={**ALICE, "If-Match": value}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert "if-match" in response.json()["detail"].lower()


async def test_two_writers_with_the_same_if_match_one_wins_one_gets_412(
    client: httpx.AsyncClient,
) -> None:
    for round_ in range(10):
        task = await create(client, title=f"contested {round_}")
        one = f"{TASKS}/{task['id']}"
        first, second = await asyncio.gather(
            client.patch(one, json={"title": "A"}, headers={**ALICE, "If-Match": '"1"'}),
            client.patch(one, json={"title": "B"}, headers={**ALICE, "If-Match": '"1"'}),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 412]
        winner = first if first.status_code == 200 else second
        stored = (await client.get(one, headers=ALICE)).json()
        assert stored == winner.json()
        assert stored["version"] == 2


# ---- PATCH (JSON Merge Patch) -------------------------------------------------------------


async def test_patch_is_a_merge_patch(client: httpx.AsyncClient) -> None:
    task = await create(
        client, title="t", description="d", priority="high", due_date="2030-01-01T00:00:00Z"
    )
    one = f"{TASKS}/{task['id']}"
    response = await client.patch(
        one, json={"description": None, "completed": True}, headers={**ALICE, **MERGE_PATCH}
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["description"] is None  # null clears
    assert patched["completed"] is True
    assert (patched["title"], patched["priority"], patched["due_date"]) == (
        "t",
        "high",
        "2030-01-01T00:00:00Z",
    )  # absent: unchanged
    cleared = (
        await client.patch(one, json={"priority": None, "due_date": None}, headers=ALICE)
    ).json()
    assert (cleared["priority"], cleared["due_date"]) == (None, None)


@pytest.mark.parametrize("body", [{"title": None}, {"completed": None}, {"title": ""}])
async def test_patch_null_title_or_completed_is_422(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    task = await create(client)
    response = await client.patch(f"{TASKS}/{task['id']}", json=body, headers=ALICE)
    assert response.status_code == 422
    assert (await client.get(f"{TASKS}/{task['id']}", headers=ALICE)).json() == task


# ---- idempotent creates -------------------------------------------------------------------


def keyed(key: str, who: dict[str, str] = ALICE) -> dict[str, str]:
    return {**who, "Idempotency-Key": key}


async def test_a_retried_create_is_replayed_byte_for_byte(client: httpx.AsyncClient) -> None:
    body = {"title": "buy milk", "priority": "low"}
    first = await client.post(TASKS, json=body, headers=keyed("retry-1"))
    again = await client.post(TASKS, json=body, headers=keyed("retry-1"))
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    # The replay is the first answer even after the task changed.
    await client.patch(first.headers["location"], json={"title": "changed"}, headers=ALICE)
    later = await client.post(TASKS, json=body, headers=keyed("retry-1"))
    assert later.content == first.content
    assert len((await client.get(TASKS, headers=ALICE)).json()) == 1


async def test_the_same_key_with_another_body_is_422(client: httpx.AsyncClient) -> None:
    await client.post(TASKS, json={"title": "one"}, headers=keyed("k"))
    response = await client.post(TASKS, json={"title": "two"}, headers=keyed("k"))
    assert response.status_code == 422
    assert response.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert len((await client.get(TASKS, headers=ALICE)).json()) == 1


async def test_one_users_keys_mean_nothing_to_another(client: httpx.AsyncClient) -> None:
    a = await client.post(TASKS, json={"title": "mine"}, headers=keyed("shared"))
    b = await client.post(TASKS, json={"title": "mine"}, headers=keyed("shared", BOB))
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    assert "idempotent-replayed" not in b.headers


@pytest.mark.parametrize(
    "key", [b"", b"has space", "é".encode(), b"x" * 256, b"tab\there", b"\x7f"]
)
async def test_a_malformed_idempotency_key_is_422(client: httpx.AsyncClient, key: bytes) -> None:
    headers = [(b"authorization", ALICE["Authorization"].encode()), (b"idempotency-key", key)]
    response = await client.post(TASKS, json={"title": "x"}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert (await client.get(TASKS, headers=ALICE)).json() == []


async def test_fifty_concurrent_creates_with_one_key_make_one_task(
    client: httpx.AsyncClient,
) -> None:
    body = {"title": "once", "description": "only once"}
    responses = await asyncio.gather(
        *[client.post(TASKS, json=body, headers=keyed("fifty")) for _ in range(50)]
    )
    statuses = {response.status_code for response in responses}
    assert statuses <= {201, 409}, statuses
    created = [response for response in responses if response.status_code == 201]
    assert created
    assert len({(r.content, r.headers["location"], r.headers["etag"]) for r in created}) == 1
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"
            assert response.headers["retry-after"] == "1"
    assert len((await client.get(TASKS, headers=ALICE)).json()) == 1
    retry = await client.post(TASKS, json=body, headers=keyed("fifty"))
    assert retry.status_code == 201
    assert retry.content == created[0].content


async def test_an_expired_key_is_free_again_and_purged(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    first = await client.post(TASKS, json={"title": "a"}, headers=keyed("old"))
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text("UPDATE idempotency_keys SET created_at = :old"),
            {"old": datetime(2000, 1, 1, tzinfo=UTC).replace(tzinfo=None)},
        )
    second = await client.post(TASKS, json={"title": "b"}, headers=keyed("old"))
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
    await client.post(TASKS, json={"title": "c"}, headers=keyed("other"))
    services = app.services  # type: ignore[attr-defined]
    later = datetime.now(UTC) + services.sync.idempotency_ttl + timedelta(minutes=1)
    assert await purge_expired(services.db, services.sync, later) == 2
    replay = await client.post(TASKS, json={"title": "b"}, headers=keyed("old"))
    assert "idempotent-replayed" not in replay.headers  # purged: a new create


# ---- the change feed ----------------------------------------------------------------------


async def sync(
    client: httpx.AsyncClient, since: str | None, who: dict[str, str] = ALICE, limit: int = 2
) -> tuple[list[dict[str, Any]], str]:
    """Every change after `since`, following `more`; and the final `next`."""
    changes: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        response = await client.get(CHANGES, params=params, headers=who)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"changes", "next", "more"}
        changes += page["changes"]
        since = page["next"]
        if not page["more"]:
            assert since is not None
            return changes, since


def apply(replica: dict[int, dict[str, Any]], changes: list[dict[str, Any]]) -> None:
    for change in changes:
        if change.get("deleted"):
            replica.pop(change["id"], None)
        else:
            replica[change["id"]] = change


async def test_first_sync_then_incremental_with_deletions(client: httpx.AsyncClient) -> None:
    kept = await create(client, title="kept")
    changed = await create(client, title="changed")
    doomed = await create(client, title="doomed")
    await create(client, headers=BOB, title="bob's")
    first, token = await sync(client, None)
    assert [task["id"] for task in first] == [kept["id"], changed["id"], doomed["id"]]
    assert all("deleted" not in task for task in first)

    await client.put(f"{TASKS}/{changed['id']}", json={"title": "v2"}, headers=ALICE)
    await client.put(f"{TASKS}/{changed['id']}", json={"title": "v3"}, headers=ALICE)
    await client.delete(f"{TASKS}/{doomed['id']}", headers=ALICE)
    new = await create(client, title="new")
    changes, token = await sync(client, token)
    assert changes == [
        {**changed, "title": "v3", "version": 3, "updated_at": changes[0]["updated_at"]},
        {"id": doomed["id"], "deleted": True, "version": 2},
        new,
    ]
    nothing, same = await sync(client, token)
    assert nothing == []
    assert SyncToken.decode(same, "alice")[:2] == SyncToken.decode(token, "alice")[:2]


async def test_a_token_of_another_user_or_malformed_is_422(client: httpx.AsyncClient) -> None:
    await create(client)
    _, token = await sync(client, None)
    forged = token[:-16] + "0" * 16  # well-formed, but no user's
    for since in [token, forged]:
        response = await client.get(CHANGES, params={"since": since}, headers=BOB)
        assert response.status_code == 422, (since, response.text)
        assert response.json() == {
            "detail": "query.since: invalid sync token; use the `next` of an earlier answer",
            "code": "VALIDATION_ERROR",
        }  # says nothing more
    for since in ["nonsense", token[:-2], "", token + "0"]:
        response = await client.get(CHANGES, params={"since": since}, headers=ALICE)
        assert response.status_code == 422, (since, response.text)
        assert response.json()["code"] == "VALIDATION_ERROR"
        assert "since" in response.json()["detail"]


async def test_a_token_older_than_the_deletions_kept_is_410(client: httpx.AsyncClient) -> None:
    old = SyncToken(0, 0, int(time.time()) - 31 * 86_400).encode("alice")
    response = await client.get(CHANGES, params={"since": old}, headers=ALICE)
    assert response.status_code == 410
    assert response.json()["code"] == "SYNC_TOKEN_EXPIRED"
    recent = SyncToken(0, 0, int(time.time()) - 29 * 86_400).encode("alice")
    assert (await client.get(CHANGES, params={"since": recent}, headers=ALICE)).status_code == 200


async def test_tombstones_are_purged_after_retention(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    task = await create(client)
    _, token = await sync(client, None)
    await client.delete(f"{TASKS}/{task['id']}", headers=ALICE)
    services = app.services  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    assert await purge_expired(services.db, services.sync, now) == 0
    later = now + services.sync.tombstone_retention + timedelta(minutes=1)
    assert await purge_expired(services.db, services.sync, later) == 1
    changes, _ = await sync(client, token)
    assert changes == []


# ---- the property: replicas rebuilt from the feed equal the server ------------------------

Step = tuple[str, int, int]  # (kind, client, which task)
steps = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["create", "update", "patch", "delete", "sync", "resync"]),
            st.integers(0, 2),
            st.integers(0, 10),
        ),
        min_size=1,
        max_size=6,
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=steps, page=st.integers(1, 4))
async def test_replicas_rebuilt_from_the_feed_equal_the_server(
    client: httpx.AsyncClient, batches: list[list[Step]], page: int
) -> None:
    """Three clients of one user write concurrently (each batch at once) and sync from
    their own tokens at random moments; after quiescence each replica equals the server."""
    who = auth(f"sync-{uuid.uuid4().hex[:8]}")
    replicas: list[dict[int, dict[str, Any]]] = [{}, {}, {}]
    tokens: list[str | None] = [None, None, None]
    known: list[int] = []

    async def run(kind: str, client_no: int, which: int) -> None:
        target = f"{TASKS}/{known[which % len(known)]}" if known else None
        if kind == "create" or target is None:
            response = await client.post(TASKS, json={"title": f"t{which}"}, headers=who)
            assert response.status_code == 201, response.text
            known.append(response.json()["id"])
        elif kind in ("update", "patch"):
            method = "PUT" if kind == "update" else "PATCH"
            body = {"title": f"{kind} {client_no}", "completed": which % 2 == 0}
            response = await client.request(method, target, json=body, headers=who)
            assert response.status_code in (200, 404), response.text
        elif kind == "delete":
            response = await client.delete(target, headers=who)
            assert response.status_code in (204, 404), response.text
        else:
            if kind == "resync":  # start over, as a new device would
                replicas[client_no], tokens[client_no] = {}, None
            changes, tokens[client_no] = await sync(client, tokens[client_no], who, page)
            apply(replicas[client_no], changes)

    for batch in batches:
        await asyncio.gather(*[run(*step) for step in batch])
    server = {task["id"]: task for task in (await client.get(TASKS, headers=who)).json()}
    for client_no in range(3):
        changes, tokens[client_no] = await sync(client, tokens[client_no], who, page)
        apply(replicas[client_no], changes)
        note(f"client {client_no}: {sorted(replicas[client_no])} vs {sorted(server)}")
        assert replicas[client_no] == server


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_the_change_feed_is_read_only(client: httpx.AsyncClient, method: str) -> None:
    """405 with `Allow: GET, HEAD`, not a 422 for a task id "changes"."""
    response = await client.request(method, CHANGES, headers=ALICE)
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"
    assert response.headers["allow"] == "GET, HEAD"
