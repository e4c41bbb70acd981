"""The screens' queries through HTTP: completed_at, date filters, sorting, bound cursors,
and a property test that following `Link` pages returns exactly the filtered, sorted set."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskapi import search
from taskapi.tasks.contract import PRIORITY_RANK, SORT_FIELDS
from tests.support.tasks import create
from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
ALICE = auth("alice")


async def ids(client: httpx.AsyncClient, query: str, headers: dict[str, str] = ALICE) -> list[int]:
    response = await client.get(f"{TASKS}?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()]


async def test_completed_at_is_set_on_completion_and_cleared_on_reopening(
    client: httpx.AsyncClient,
) -> None:
    done = await create(client, completed=True)
    assert done["completed_at"] == done["created_at"]
    task = await create(client)
    assert task["completed_at"] is None
    url = f"{TASKS}/{task['id']}"
    completed = (await client.patch(url, json={"completed": True}, headers=ALICE)).json()
    assert completed["completed_at"] == completed["updated_at"]
    again = (await client.put(url, json={"completed": True}, headers=ALICE)).json()
    assert again["completed_at"] == completed["completed_at"]  # still the first completion
    renamed = (await client.patch(url, json={"title": "x"}, headers=ALICE)).json()
    assert renamed["completed_at"] == completed["completed_at"]
    reopened = (await client.patch(url, json={"completed": False}, headers=ALICE)).json()
    assert reopened["completed_at"] is None
    ignored = await client.patch(url, json={"completed_at": "2020-01-01T00:00:00Z"}, headers=ALICE)
    assert ignored.json()["completed_at"] is None


async def test_due_ranges_overdue_and_has_due(client: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    past = await create(client, due_date=(now - timedelta(days=1)).isoformat())
    past_done = await create(client, due_date=(now - timedelta(days=2)).isoformat(), completed=True)
    today = await create(client, due_date="2030-01-01T10:00:00Z")
    edge = await create(client, due_date="2030-01-02T00:00:00Z")
    none = await create(client)
    window = urlencode({"due_after": "2030-01-01T00:00:00Z", "due_before": "2030-01-02T00:00:00Z"})
    assert await ids(client, window) == [today["id"]]  # half-open: `edge` is out
    assert await ids(client, "due_after=2030-01-02T00:00:00") == [edge["id"]]  # naive is UTC
    assert await ids(client, "overdue=true") == [past["id"]]
    assert await ids(client, "overdue=false") == [
        past_done["id"],
        today["id"],
        edge["id"],
        none["id"],
    ]
    assert await ids(client, "has_due=false") == [none["id"]]
    assert await ids(client, "has_due=true&sort=-due_date") == [
        edge["id"],
        today["id"],
        past["id"],
        past_done["id"],
    ]


async def test_completed_ranges(client: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    first = await create(client, completed=True)
    middle = datetime.now(UTC)
    second = await create(client, completed=True)
    await create(client)
    query = urlencode({"completed_after": before.isoformat(), "sort": "-completed_at"})
    assert await ids(client, query) == [second["id"], first["id"]]
    query = urlencode({"completed_before": middle.isoformat()})
    assert await ids(client, query) == [first["id"]]
    by_completion = await ids(client, "sort=-completed_at")
    assert by_completion[:2] == [second["id"], first["id"]]  # the never completed last


async def test_sorts_put_missing_values_last_either_way(client: httpx.AsyncClient) -> None:
    a = await create(client, title="b", priority="low", due_date="2030-01-02T00:00:00Z")
    b = await create(client, title="a", priority="high")
    c = await create(client, title="c", due_date="2030-01-01T00:00:00Z")
    d = await create(client, title="a", priority="medium", due_date="2030-01-02T00:00:00Z")
    assert await ids(client, "sort=priority") == [b["id"], d["id"], a["id"], c["id"]]
    assert await ids(client, "sort=-priority") == [a["id"], d["id"], b["id"], c["id"]]
    assert await ids(client, "sort=due_date") == [c["id"], a["id"], d["id"], b["id"]]
    assert await ids(client, "sort=-due_date") == [a["id"], d["id"], c["id"], b["id"]]
    assert await ids(client, "sort=title,-priority") == [d["id"], b["id"], a["id"], c["id"]]
    assert await ids(client, "sort=-created_at") == [d["id"], c["id"], b["id"], a["id"]]
    assert await ids(client, "sort=updated_at") == [a["id"], b["id"], c["id"], d["id"]]


async def test_wrong_values_are_422_naming_the_parameter(client: httpx.AsyncClient) -> None:
    for name, value in [
        ("sort", "colour"),
        ("sort", "relevance,title,x"),
        ("sort", ""),
        ("due_after", "tomorrow"),
        ("due_before", "1700000000"),
        ("completed_after", "2030-13-01"),
        ("completed_before", ""),
        ("overdue", "maybe"),
        ("has_due", "2"),
        ("list_id", "0"),
    ]:
        response = await client.get(f"{TASKS}?{urlencode({name: value})}", headers=ALICE)
        assert response.status_code == 422, (name, value)
        body = response.json()
        assert body["code"] == "VALIDATION_ERROR"
        assert name in body["detail"], (name, value, body)


async def test_a_repeated_sort_key_is_redundant(client: httpx.AsyncClient) -> None:
    a = await create(client, title="b", priority="low")
    b = await create(client, title="a", priority="high")
    c = await create(client, title="a", priority="low")
    expected = [b["id"], c["id"], a["id"]]  # title, then high before low
    assert await ids(client, "sort=title,-priority") == [c["id"], b["id"], a["id"]]
    assert await ids(client, "sort=title,-title,priority,title") == expected
    assert await ids(client, "sort=title,priority") == expected
    first = await client.get(f"{TASKS}?sort=title,-title,priority&limit=1", headers=ALICE)
    cursor = first.headers["link"].split("cursor=")[1].split(">")[0]
    rest = await ids(client, f"sort=title,priority&cursor={cursor}")  # the same order
    assert rest == expected[1:]


async def test_a_cursor_is_bound_to_its_sort_and_filters(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await create(client, title=f"t{n}", priority="high")
    page = await client.get(f"{TASKS}?sort=title&limit=1&priority=high", headers=ALICE)
    cursor = page.headers["link"].split("cursor=")[1].split(">")[0]
    plain = await client.get(f"{TASKS}?limit=1", headers=ALICE)
    id_cursor = plain.headers["link"].split("cursor=")[1].split(">")[0]
    for query in (
        f"sort=-title&limit=1&priority=high&cursor={cursor}",
        f"sort=title&limit=1&cursor={cursor}",
        f"sort=title&limit=1&priority=low&cursor={cursor}",
        f"sort=title&priority=high&has_due=false&cursor={cursor}",
        f"limit=1&cursor={cursor}",
        f"sort=title&priority=high&cursor={id_cursor}",
        "sort=title&cursor=abc",
    ):
        response = await client.get(f"{TASKS}?{query}", headers=ALICE)
        assert response.status_code == 422, query
        assert "cursor" in response.json()["detail"]
    again = await client.get(
        f"{TASKS}?sort=title&priority=high&limit=1&cursor={cursor}", headers=ALICE
    )
    assert [task["title"] for task in again.json()] == ["t1"]


# ---- the property: pages are exactly the filtered, sorted set --------------------------

DUES = [None, "2030-01-01T00:00:00Z", "2030-01-01T12:00:00Z", "2030-02-01T00:00:00Z"]
TASK = st.fixed_dictionaries(
    {
        "title": st.sampled_from(["a", "b", "ab", "c"]),
        "priority": st.sampled_from([None, "low", "medium", "high"]),
        "due_date": st.sampled_from(DUES),
        "completed": st.booleans(),
        "labels": st.sampled_from([[], ["x"], ["Y"], ["x", "y"]]),
    }
)
FILTERS = st.fixed_dictionaries(
    {},
    optional={
        "completed": st.sampled_from(["true", "false"]),
        "priority": st.sampled_from(["low", "high"]),
        "due_after": st.sampled_from(DUES[1:]),
        "due_before": st.sampled_from(DUES[1:]),
        "has_due": st.sampled_from(["true", "false"]),
        "list_id": st.just("inbox"),
        "label": st.sampled_from(["x", "y", "X"]),
        # Titles are one word each: every match ranks alike, so `relevance` orders nothing.
        "q": st.sampled_from(["a", "A", "ab", "b", "a a", "?"]),
    },
)
SORTS = st.lists(
    st.tuples(st.sampled_from([f for f in SORT_FIELDS if f != "completed_at"]), st.booleans()),
    max_size=3,
    unique_by=lambda key: key[0],
)
# Between pages: create a task, or change one (by its position in the ids created so far).
CHANGES = st.lists(st.tuples(st.booleans(), st.integers(0, 30), TASK), max_size=4)


def matches(task: dict[str, Any], filters: dict[str, str]) -> bool:
    due = task["due_date"]
    checks = {
        "completed": lambda v: task["completed"] == (v == "true"),
        "priority": lambda v: task["priority"] == v,
        "due_after": lambda v: due is not None and due >= v,
        "due_before": lambda v: due is not None and due < v,
        "has_due": lambda v: (due is not None) == (v == "true"),
        "list_id": lambda v: task["list_id"] is None,
        "label": lambda v: v.lower() in [label.lower() for label in task["labels"]],
        "q": lambda v: found_by(task, search.words(v)),
    }
    return all(checks[name](value) for name, value in filters.items())


def found_by(task: dict[str, Any], words: tuple[str, ...]) -> bool:
    """Every word is a word of the task's title or description, the last a prefix of one."""
    text = f"{task['title']} {task['description'] or ''}"
    tokens = [search.fold(token) for token in search.words(text)]
    folded = [search.fold(word) for word in words]
    return all(
        any(token.startswith(word) if n == len(folded) - 1 else token == word for token in tokens)
        for n, word in enumerate(folded)
    )


def order_key(sort: list[tuple[str, bool]]) -> Any:
    def key(task: dict[str, Any]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for field, descending in sort:
            value: Any = 0 if field == "relevance" else task[field]
            if field == "priority" and value is not None:
                value = PRIORITY_RANK[value]
            if value is None:
                parts.append((1, 0))
            elif descending:
                parts.append((0, _Reversed(value)))
            else:
                parts.append((0, value))
        return (*parts, task["id"])

    return key


class _Reversed:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(self.value > other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.value == other.value)

    __hash__ = None  # type: ignore[assignment]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tasks=st.lists(TASK, max_size=14),
    filters=FILTERS,
    sort=SORTS,
    limit=st.integers(1, 4),
    changes=st.lists(CHANGES, max_size=6),
)
async def test_following_links_returns_the_filtered_sorted_set(
    client: httpx.AsyncClient,
    tasks: list[dict[str, Any]],
    filters: dict[str, str],
    sort: list[tuple[str, bool]],
    limit: int,
    changes: list[list[tuple[bool, int, dict[str, Any]]]],
) -> None:
    user = auth(f"p-{uuid.uuid4().hex}")  # a fresh user per example
    created = [await create(client, user, **task) for task in tasks]
    query = dict(filters, limit=str(limit))
    if sort:
        query["sort"] = ",".join(("-" if desc else "") + field for field, desc in sort)
    url: str | None = f"{TASKS}?{urlencode(query)}"
    seen: list[dict[str, Any]] = []
    changed: set[int] = set()
    batches = itertools.chain(changes, itertools.repeat([]))
    while url is not None:
        response = await client.get(url, headers=user)
        assert response.status_code == 200, response.text
        seen += response.json()
        link = response.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else None
        for is_create, position, body in next(batches):
            if is_create or not created:
                created.append(await create(client, user, **body))
                changed.add(created[-1]["id"])
            else:
                target = created[position % len(created)]
                response = await client.patch(f"{TASKS}/{target['id']}", json=body, headers=user)
                assert response.status_code == 200
                changed.add(target["id"])
    seen_ids = [task["id"] for task in seen]
    unchanged_seen = [task_id for task_id in seen_ids if task_id not in changed]
    assert len(unchanged_seen) == len(set(unchanged_seen)), "an unchanged task was repeated"
    expected = sorted(
        (task for task in created if task["id"] not in changed and matches(task, filters)),
        key=order_key(sort),
    )
    assert unchanged_seen == [task["id"] for task in expected]
    # Every task on a page matched the filters when it was read.
    assert all(matches(task, filters) for task in seen)
