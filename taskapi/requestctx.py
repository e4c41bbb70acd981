"""The request id, carried in a context variable so log lines can name it."""

from __future__ import annotations

from contextvars import ContextVar

# Scope key of a list the app may append (name, value) header pairs to; the edge middleware
# adds them to the response, whatever the endpoint returns.
RESPONSE_HEADERS_KEY = "taskapi.response_headers"

# Scope key of the request's `Charge`: whether its rate limit was charged yet.
CHARGE_KEY = "taskapi.charge"


class Charge:
    """Whether a request has been charged to a rate limit (its user's, or its address's
    after a failed authentication); the edge charges the address of any other."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


_request_id: ContextVar[str] = ContextVar("request_id", default="-")


def request_id() -> str:
    """The id of the request being served, or '-' outside one."""
    return _request_id.get()


def set_request_id(value: str) -> None:
    """Set the current request's id (done once, by the edge middleware)."""
    _request_id.set(value)
