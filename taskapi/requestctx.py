"""What log lines and the access log know of the request being served: its id (a context
variable, set by the edge) and who sent it (its `Exchange`, filled in by authentication)."""

from __future__ import annotations

from collections.abc import Mapping
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


# Scope key of the request's `Exchange` (set by the access layer, when it is on).
EXCHANGE_KEY = "taskapi.exchange"


class Exchange:
    """One request as the access layer records it; authentication fills in the user.

    In the scope rather than a context variable: setting one costs more than the rest of
    the access layer's bookkeeping, and the scope reaches both request paths (the edge's
    copies of the scope keep the same object).
    """

    __slots__ = ("done", "server_answer", "started", "status", "user_id")

    def __init__(self, started: float) -> None:
        self.started = started
        """When it arrived (`time.perf_counter`)."""
        self.status = 500
        """The response's status; 500, what the server answers, until the app starts one."""
        self.user_id: str | None = None
        """The verified token's `sub`."""
        self.done = False
        """Recorded (the access layer records each request once)."""
        self.server_answer: tuple[int, str] | None = None
        """The status and request id the server answered with instead of the app
        (`answered_by_server`)."""


def answered_by_server(scope: Mapping[str, object], status: int, request_id: str) -> None:
    """The server answered the request of `scope` with `status` and `X-Request-ID:
    request_id` while the app was still reading its body (the service's HTTP protocol, past
    BODY_TIMEOUT_SECONDS): the access record says so, whatever the app then answers the
    disconnect it reads (nobody receives that)."""
    exchange = scope.get(EXCHANGE_KEY)
    if isinstance(exchange, Exchange):
        exchange.server_answer = (status, request_id)
