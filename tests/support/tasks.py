"""Task helpers shared by the HTTP tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.tokens import auth

TASKS = "/api/v1/tasks"


async def create(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any
) -> dict[str, Any]:
    """POST a task (alice's unless `headers` say otherwise; a default title) and return it."""
    body.setdefault("title", "a task")
    response = await client.post(TASKS, json=body, headers=headers or auth("alice"))
    assert response.status_code == 201, response.text
    return dict(response.json())
