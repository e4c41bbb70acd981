"""Search (`q=`, `sort=relevance`) through HTTP on every backend, and its pieces in
`taskapi.search`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from taskapi import search
from tests.support.tasks import create
from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
ALICE = auth("alice")
BOB = auth("bob")


async def found(
    client: httpx.AsyncClient, q: str, headers: dict[str, str] = ALICE, **params: str
) -> list[str]:
    response = await client.get(f"{TASKS}?{urlencode({'q': q, **params})}", headers=headers)
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()]


async def test_every_word_matches_the_last_as_a_prefix(client: httpx.AsyncClient) -> None:
    await create(client, title="Pay the invoice", description="before Friday")
    await create(client, title="Invoices to file")
    await create(client, title="Call the bank", description="about the invoice")
    await create(client, title="Inventory")
    assert await found(client, "invoice") == [
        "Pay the invoice",
        "Invoices to file",
        "Call the bank",
    ]
    assert await found(client, "inv") == [
        "Pay the invoice",
        "Invoices to file",
        "Call the bank",
        "Inventory",
    ]
    assert await found(client, "invoice friday") == ["Pay the invoice"]  # title and description
    assert await found(client, "friday invoice") == ["Pay the invoice"]
    assert await found(client, "pay bank") == []  # every word, in one task
    assert await found(client, "invoic pay") == []  # only the last word is a prefix
    assert await found(client, "the inv") == ["Pay the invoice", "Call the bank"]


async def test_without_regard_to_case_or_accents(client: httpx.AsyncClient) -> None:
    await create(client, title="Réserver le café", description="À L'ÉCOLE")
    await create(client, title="CAFE NOIR")
    assert await found(client, "cafe") == ["Réserver le café", "CAFE NOIR"]
    assert await found(client, "CAFÉ") == ["Réserver le café", "CAFE NOIR"]
    assert await found(client, "ecole reserv") == ["Réserver le café"]
    assert await found(client, "Éco") == ["Réserver le café"]
    decomposed = "cafe\u0301"  # NFD: the accent as its own character
    assert await found(client, decomposed) == ["Réserver le café", "CAFE NOIR"]


async def test_punctuation_separates_words(client: httpx.AsyncClient) -> None:
    await create(client, title="e-mail the client, then (maybe) call")
    assert await found(client, "mail") == ["e-mail the client, then (maybe) call"]
    assert await found(client, "client, maybe") == ["e-mail the client, then (maybe) call"]
    assert await found(client, '"call"') == ["e-mail the client, then (maybe) call"]


async def test_a_query_without_words_matches_every_task(client: httpx.AsyncClient) -> None:
    await create(client, title="one")
    await create(client, title="two")
    assert await found(client, "!?") == ["one", "two"]
    assert await found(client, " ") == ["one", "two"]
    assert await found(client, "!?", sort="relevance") == ["one", "two"]  # ranks alike


async def test_search_never_shows_another_users_tasks(client: httpx.AsyncClient) -> None:
    await create(client, ALICE, title="secret invoice")
    await create(client, BOB, title="invoice of bob")
    assert await found(client, "invoice") == ["secret invoice"]
    assert await found(client, "invoice", BOB) == ["invoice of bob"]
    assert await found(client, "secret", BOB) == []
    assert await found(client, "secret", BOB, sort="relevance") == []


async def test_search_follows_writes(client: httpx.AsyncClient) -> None:
    task = await create(client, title="draft", description="old words")
    url = f"{TASKS}/{task['id']}"
    assert await found(client, "old") == ["draft"]
    response = await client.patch(url, json={"description": "new text"}, headers=ALICE)
    assert response.status_code == 200
    assert await found(client, "old") == []
    assert await found(client, "new") == ["draft"]
    response = await client.put(url, json={"title": "final", "description": None}, headers=ALICE)
    assert response.status_code == 200
    assert await found(client, "draft") == []
    assert await found(client, "new") == []
    assert await found(client, "fin") == ["final"]
    assert (await client.delete(url, headers=ALICE)).status_code == 204
    assert await found(client, "final") == []


async def test_relevance_puts_title_matches_first(client: httpx.AsyncClient) -> None:
    await create(client, title="misc", description="the invoice is somewhere here")
    await create(client, title="invoice")
    await create(client, title="invoice invoice", description="invoice")
    await create(client, title="other")
    assert await found(client, "invoice", sort="relevance") == [
        "invoice invoice",
        "invoice",
        "misc",
    ]
    assert await found(client, "invoice", sort="-relevance") == [
        "misc",
        "invoice",
        "invoice invoice",
    ]
    assert await found(client, "invoice", sort="relevance,-title") == [
        "invoice invoice",
        "invoice",
        "misc",
    ]
    assert await found(client, "invoice") == ["misc", "invoice", "invoice invoice"]  # id order


async def test_search_combines_with_other_filters(client: httpx.AsyncClient) -> None:
    await create(client, title="buy milk", labels=["errands"], priority="high")
    await create(client, title="buy stamps", labels=["errands"], completed=True)
    await create(client, title="buy a car", priority="high")
    assert await found(client, "buy", label="errands") == ["buy milk", "buy stamps"]
    assert await found(client, "buy", completed="false", sort="relevance") == [
        "buy milk",
        "buy a car",
    ]
    assert await found(client, "buy", priority="high", sort="-title") == ["buy milk", "buy a car"]


async def pages(client: httpx.AsyncClient, query: dict[str, str]) -> list[list[dict[str, Any]]]:
    url: str | None = f"{TASKS}?{urlencode(query)}"
    seen: list[list[dict[str, Any]]] = []
    while url is not None:
        response = await client.get(url, headers=ALICE)
        assert response.status_code == 200, response.text
        seen.append(response.json())
        link = response.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else None
    return seen


async def test_relevance_pages_follow_their_links(client: httpx.AsyncClient) -> None:
    titles = ["invoice", "invoice invoice", "note", "invoice again", "an invoice", "invoices"]
    for n, title in enumerate(titles * 2):
        await create(client, title=f"{title} {n}", description="invoice" if n % 3 else None)
    whole = await pages(client, {"q": "invoice", "sort": "relevance", "limit": "100"})
    assert len(whole) == 1
    paged = await pages(client, {"q": "invoice", "sort": "relevance", "limit": "2"})
    assert len(paged) > 3
    assert [task["id"] for page in paged for task in page] == [task["id"] for task in whole[0]]


async def test_a_cursor_is_bound_to_its_query(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await create(client, title=f"invoice {n}")
    first = await client.get(f"{TASKS}?q=invoice&sort=relevance&limit=1", headers=ALICE)
    cursor = first.headers["link"].split("cursor=")[1].split(">")[0]
    for query in (f"q=invoic&sort=relevance&cursor={cursor}", f"sort=relevance&cursor={cursor}"):
        response = await client.get(f"{TASKS}?{query}", headers=ALICE)
        assert response.status_code == 422, query
        assert response.json()["detail"].startswith("query.cursor"), response.text
    same = await client.get(f"{TASKS}?q=invoice&sort=relevance&cursor={cursor}", headers=ALICE)
    assert same.status_code == 200, same.text
    assert len(same.json()) == 2


@pytest.mark.parametrize("q", ["", "x" * 201])
async def test_q_is_1_to_200_characters(client: httpx.AsyncClient, q: str) -> None:
    response = await client.get(f"{TASKS}?{urlencode({'q': q})}", headers=ALICE)
    assert response.status_code == 422
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert "query.q" in response.json()["detail"]


async def test_the_longest_query_is_taken(client: httpx.AsyncClient) -> None:
    await create(client, title="a b")
    assert await found(client, "a " * 99 + "b") == ["a b"]
    assert await found(client, "\x00a\x00") == ["a b"]  # NUL separates words, is never sent


# ---- the pieces ---------------------------------------------------------------------------


def test_words_are_runs_of_letters_and_digits() -> None:
    assert search.words("Pay the in-voice, 2x_now!") == ("Pay", "the", "in", "voice", "2x", "now")
    assert search.words("cafe\u0301") == ("café",)
    assert search.words("!? _") == ()


def test_the_queries_each_backend_is_asked() -> None:
    words = ("Pay", "inv")
    assert search.postgres_query(words) == "'Pay' & 'inv':*"
    assert search.sqlite_match(words) == '"Pay" "inv"*'
    assert search.postgres_query(("x",)) == "'x':*"
    assert search.rank_words(("ÉCOLE", "Straße")) == '["ecole","strasse"]'


def test_the_sqlite_rank_depends_on_the_task_and_the_query_alone() -> None:
    words = search.rank_words(("invoice",))
    assert search.rank("Invoice", None, words) == search.TITLE_WEIGHT
    assert search.rank("x", "an invoice", words) == search.DESCRIPTION_WEIGHT
    assert search.rank("invoice invoices", "invoice", words) == pytest.approx(2.1)
    assert search.rank("nothing", "", words) == 0.0
    assert search.rank("anything", None, "[]") == 0.0
