"""HTTP endpoints of `/api/v1/labels`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from taskapi.auth.dependencies import CurrentUser
from taskapi.db import Session, UnitOfWorkRoute
from taskapi.labels import operations
from taskapi.tasks.operations import ReplyResponse
from taskapi.tasks.router import BODY_ERRORS, COMMON_ERRORS, _error, require_json
from taskapi.tasks.schemas import Label, LabelText

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: _error("No task of the caller carries this label (`LABEL_NOT_FOUND`)"),
}
LabelName = Annotated[LabelText, Path(description="The label, without regard to case")]


class LabelCount(BaseModel):
    name: str
    tasks: int = Field(description="How many of the caller's tasks carry it")


class LabelRename(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Label


router = APIRouter(
    prefix="/api/v1/labels", tags=["labels"], responses=COMMON_ERRORS, route_class=UnitOfWorkRoute
)


@router.get("", response_model=list[LabelCount], summary="The caller's labels, with counts")
async def list_labels(work: Session, user: CurrentUser) -> Response:
    return ReplyResponse(await operations.list_labels(work, user.sub))


@router.patch(
    "/{name}",
    response_model=LabelCount,
    summary="Rename a label on all the caller's tasks",
    responses={**NOT_FOUND, **BODY_ERRORS},
    dependencies=[Depends(require_json)],
)
async def rename_label(
    name: LabelName, body: LabelRename, work: Session, user: CurrentUser
) -> Response:
    return ReplyResponse(await operations.rename_label(work, user.sub, name, body.name))


@router.delete(
    "/{name}",
    status_code=204,
    summary="Remove a label from all the caller's tasks",
    responses=NOT_FOUND,
    response_class=Response,
)
async def delete_label(name: LabelName, work: Session, user: CurrentUser) -> Response:
    return ReplyResponse(await operations.delete_label(work, user.sub, name))
