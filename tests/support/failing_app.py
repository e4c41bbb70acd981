"""`uvicorn tests.support.failing_app:app`: the service (`main:app`), except that updating
a task fails as a driver or a validator can, quoting its input in the exception's message.
For the test that no request's data reaches a log line, even through an unexpected error."""

from __future__ import annotations

from typing import Any

from main import app
from taskapi.tasks import operations

__all__ = ["app"]


async def _update_fails(
    work: Any, owner_id: str, task_id: int, data: Any, if_match: Any = None
) -> Any:
    raise RuntimeError(f"invalid input for query argument $3: {data.title!r}")


operations.update_task = _update_fails  # both request paths call it through the module
