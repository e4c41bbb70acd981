"""Liveness (`/health`, never touches the database) and readiness (`/ready`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from taskapi import __version__
from taskapi.db.failures import ping
from taskapi.errors import ErrorBody
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
    await ping(request.app.services.db, READY_TIMEOUT_SECONDS)
    return json_response({"status": "ready", "database": "ok"})
