"""The lists API's errors: a list that is not the caller's is missing, whoever asks."""

from __future__ import annotations

from taskapi.errors import APIError

LIST_NOT_FOUND = "List not found or you don't have permission to access it"


class ListNotFoundError(APIError):
    """`/api/v1/lists/{id}` of a missing list, or someone else's."""

    status_code = 404
    code = "LIST_NOT_FOUND"
    detail = LIST_NOT_FOUND


class UnknownListError(APIError):
    """A task body's `list_id`, or `move_tasks_to`, that names no list of the caller's."""

    status_code = 422
    code = "LIST_NOT_FOUND"

    def __init__(self, where: str) -> None:
        super().__init__(f"{where}: {LIST_NOT_FOUND}")
