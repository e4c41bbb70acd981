"""HTTP endpoints of `/api/v1/me`."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from taskapi.auth.dependencies import CurrentUser
from taskapi.db import Session, UnitOfWorkRoute
from taskapi.me import operations
from taskapi.tasks.operations import ReplyResponse
from taskapi.tasks.router import COMMON_ERRORS
from taskapi.tasks.schemas import UTCDateTime


class Me(BaseModel):
    """The caller as provisioned from their token, and how much they hold."""

    id: str = Field(description="The token's `sub`")
    email: str | None
    name: str | None
    avatar_url: str | None
    created_at: UTCDateTime
    updated_at: UTCDateTime
    tasks: int = Field(description="How many tasks the caller has")
    completed_tasks: int = Field(description="How many of them are completed")
    lists: int = Field(description="How many lists the caller has")


router = APIRouter(
    prefix="/api/v1/me", tags=["me"], responses=COMMON_ERRORS, route_class=UnitOfWorkRoute
)


@router.get("", response_model=Me, summary="The caller's profile and counts")
async def get_me(work: Session, user: CurrentUser) -> Me:
    return Me.model_validate(await operations.get_me(work, user.sub))


@router.delete(
    "",
    status_code=204,
    summary="Delete every row of the caller",
    description=(
        "Deletes the caller's profile, tasks, lists, labels, idempotency keys and deletions "
        "kept for the change feed, in one transaction. The next request with a token "
        "provisions the user afresh, with nothing."
    ),
    response_class=Response,
)
async def delete_me(request: Request, work: Session, user: CurrentUser) -> Response:
    provisioner = request.app.services.authenticator.provisioner
    return ReplyResponse(await operations.delete_me(work, user.sub, provisioner))


__all__ = ["Me", "datetime", "router"]
