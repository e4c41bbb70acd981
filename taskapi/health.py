"""Liveness (`/health`, never touches the database) and readiness (`/ready`)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from taskapi import __version__
from taskapi.db import Database
from taskapi.errors import ErrorBody, error_response, is_unavailable
from taskapi.jsonutil import json_response

router = APIRouter(tags=["health"])
READY_TIMEOUT_SECONDS = 2.0
_HEALTH = {"status": "healthy", "service": "task-management-api", "version": __version__}


@router.get("/health", summary="Liveness: the process is up (no database check)")
async def health() -> dict[str, Any]:
    return _HEALTH


@router.get(
    "/ready",
    summary="Readiness: the database answers",
    responses={503: {"model": ErrorBody, "description": "Database unavailable"}},
)
async def ready(request: Request) -> Response:
    database: Database = request.app.services.db
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await database.ping()
    except Exception as error:
        if not is_unavailable(error) and not isinstance(error, TimeoutError):
            raise
        return error_response(
            503,
            "SERVICE_UNAVAILABLE",
            "Database unavailable",
            {"Retry-After": str(request.app.services.settings.retry_after_seconds)},
        )
    return json_response({"status": "ready", "database": "ok"})
