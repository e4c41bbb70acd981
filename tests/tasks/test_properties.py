"""Property-based: any title/description either round-trips exactly or is a clean 422."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.tokens import auth

TASKS = "/api/v1/tasks"
ALICE = auth("alice")


def acceptable(title: str, description: str | None) -> bool:
    def storable(text: str) -> bool:
        return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)

    return (
        1 <= len(title) <= 200
        and bool(title.strip())
        and storable(title)
        and (description is None or (len(description) <= 10_000 and storable(description)))
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    title=st.text(st.characters(codec=None), max_size=210),
    description=st.none() | st.text(st.characters(codec=None), max_size=300),
)
async def test_any_text_round_trips_or_is_refused(
    client: httpx.AsyncClient, title: str, description: str | None
) -> None:
    # json.dumps escapes lone surrogates as \udXXX, which JSON allows and Python decodes.
    body = json.dumps({"title": title, "description": description})
    response = await client.post(
        TASKS, content=body, headers={**ALICE, "Content-Type": "application/json"}
    )
    if acceptable(title, description):
        assert response.status_code == 201, response.text
        fetched = (await client.get(response.headers["location"], headers=ALICE)).json()
        assert fetched["title"] == title
        assert fetched["description"] == description
    else:
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "VALIDATION_ERROR"


async def test_lone_surrogates_are_refused_not_500(client: httpx.AsyncClient) -> None:
    body = b'{"title": "bad \\ud800 surrogate"}'
    response = await client.post(
        TASKS, content=body, headers={**ALICE, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "title" in response.json()["detail"]
