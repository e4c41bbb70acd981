"""Request and response bodies of the lists API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from taskapi.models import LIST_NAME_MAX
from taskapi.tasks.schemas import TITLE_PATTERN, UTCDateTime, not_blank, storable

ListName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=LIST_NAME_MAX,
        examples=["Errands"],
        json_schema_extra={"pattern": TITLE_PATTERN},
    ),
    AfterValidator(storable),
    AfterValidator(not_blank),
]


class ListWrite(BaseModel):
    """A new list, or a list's new name (POST and PATCH)."""

    model_config = ConfigDict(extra="ignore")

    name: ListName


class ListRead(BaseModel):
    """A list as the API returns it."""

    id: int
    name: str
    created_at: UTCDateTime
    updated_at: UTCDateTime


def list_document(row: dict[str, object]) -> bytes:
    """A list row as `ListRead` serializes it."""
    return ListRead.model_validate(row).model_dump_json().encode()


__all__ = ["ListName", "ListRead", "ListWrite", "datetime", "list_document"]
