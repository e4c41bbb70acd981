"""What log lines and the access log know of the request being served, carried in context
variables: its id (set by the edge) and who sent it (set by authentication)."""

from __future__ import annotations

from contextvars import ContextVar

# Scope key of a list the app may append (name, value) header pairs to; the edge middleware
# adds them to the response, whatever the endpoint returns.
RESPONSE_HEADERS_KEY = "taskapi.response_headers"

_request_id: ContextVar[str] = ContextVar("request_id", default="-")


def request_id() -> str:
    """The id of the request being served, or '-' outside one."""
    return _request_id.get()


def set_request_id(value: str) -> None:
    """Set the current request's id (done once, by the edge middleware)."""
    _request_id.set(value)


class Exchange:
    """One request as the access layer records it; authentication fills in the user.

    A mutable object in the context variable rather than a context variable per value:
    code that runs in a copy of the context (a task it starts) still reaches the same one.
    """

    __slots__ = ("user_id",)

    def __init__(self) -> None:
        self.user_id: str | None = None


_exchange: ContextVar[Exchange | None] = ContextVar("exchange", default=None)


def begin_exchange() -> Exchange:
    """A new request's record, current for the rest of its context (the access layer)."""
    exchange = Exchange()
    _exchange.set(exchange)
    return exchange


def note_user(user_id: str) -> None:
    """Record who the current request is from (authentication, once the token is verified)."""
    exchange = _exchange.get()
    if exchange is not None:
        exchange.user_id = user_id
