"""Log lines: one handler on the root logger writing JSON objects (one a line) or readable
text, each naming the request it was written for; and the service's own access log.

Nothing a client sends is written except what each line names (method, route template,
status, request id, user id): no header, query or body. An exception logged while a
request is served shows its type and stack, not its message, which may quote the
request's data (a driver or a validator echoing its input); outside a request (start-up,
background refreshes) the message is kept.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TextIO, TypeVar

import orjson

from taskapi.config import Settings
from taskapi.requestctx import request_id

ACCESS_LOGGER = "taskapi.access"
_NO_REQUEST = "-"

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_formatted_second: tuple[int, str] = (-1, "")
_MILLISECONDS = [f".{ms:03d}Z" for ms in range(1000)]


def timestamp(created: float) -> str:
    """`created` (seconds since the epoch) in ISO 8601, UTC, to the millisecond.

    The date and time are formatted once per second: this runs for every line."""
    global _formatted_second
    second = int(created)
    cached, text = _formatted_second
    if second != cached:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _formatted_second = (second, text)  # one assignment: a thread reads a pair or the other
    return text + _MILLISECONDS[int((created - second) * 1000)]


def _exception_text(exc_info: _ExcInfo, in_request: bool) -> str:
    """The traceback of `exc_info`; inside a request, without the exceptions' messages."""
    if not in_request:
        return "".join(traceback.format_exception(*exc_info)).rstrip()
    chain: list[BaseException] = []
    error: BaseException | None = exc_info[1]
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    parts: list[str] = []
    for error in reversed(chain):
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_list(traceback.extract_tb(error.__traceback__)))
        kind = type(error)
        parts.append(f"{kind.__module__}.{kind.__qualname__} (message not logged)\n")
    return "".join(parts).rstrip()


def _exc_info(record: logging.LogRecord) -> _ExcInfo | None:
    info = record.exc_info
    if info is None or info[0] is None or info[1] is None:
        return None
    return info[0], info[1], info[2]


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the request id within a
    request, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        rid = request_id()
        entry: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if rid != _NO_REQUEST:
            entry["request_id"] = rid
        info = _exc_info(record)
        if info is not None:
            entry["exception"] = _exception_text(info, rid != _NO_REQUEST)
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message`, the traceback on the following lines."""

    def format(self, record: logging.LogRecord) -> str:
        rid = request_id()
        line = f"{timestamp(record.created)} {record.levelname} {record.name} [{rid}] "
        line += record.getMessage()
        info = _exc_info(record)
        if info is not None:
            line += "\n" + _exception_text(info, rid != _NO_REQUEST)
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


class ServiceLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The service's one handler on the root logger (replaced, not added, on each
    `configure_logging`)."""


def configure_logging(settings: Settings, stream: TextIO | None = None) -> ServiceLogHandler:
    """Send every log line, uvicorn's included, through one handler in LOG_FORMAT.

    uvicorn's own access log is switched off for good (as `--no-access-log` does): it would
    write the raw path and query of every request, and the service writes its own
    (`AccessLog`)."""
    handler = ServiceLogHandler(stream if stream is not None else sys.stderr)
    json_lines = settings.resolved_log_format == "json"
    handler.setFormatter(JSONFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, ServiceLogHandler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its start-up chatter
    return handler


def access_log_enabled(settings: Settings) -> bool:
    """ACCESS_LOG, and LOG_LEVEL lets INFO lines through (after `configure_logging`)."""
    return settings.access_log and logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO)


def _json_string(value: str) -> str:
    return orjson.dumps(value).decode()


_K = TypeVar("_K")
_V = TypeVar("_V")
_Middle = tuple[str, str]
_LineKey = tuple[str, str, int]


class _Cache(dict[_K, _V]):
    """Values made once per distinct key (method, route, status; a user id), bounded."""

    MAX_ENTRIES = 10_000

    def get_or_make(self, key: _K, make: Callable[[_K], _V]) -> _V:
        value = self.get(key)
        if value is None:
            if len(self) >= self.MAX_ENTRIES:
                self.clear()
            value = self[key] = make(key)
        return value


class AccessLog:
    """One line per request (`taskapi.access`, INFO) in the handler's format, held until
    `flush`: the access layer (`taskapi.access`) flushes whenever its worker has no request
    in flight, every `FLUSH_LINES` lines, and every second, so under load one write carries
    many lines rather than a system call each.

    A line is assembled from strings made once per (method, route, status) and per user
    id, already escaped; only the time, request id and duration are formatted per request
    (this runs on every request: a `dict` through `orjson.dumps` cost several times as much).
    """

    FLUSH_LINES = 256

    def __init__(self, handler: ServiceLogHandler, log_format: Literal["json", "text"]) -> None:
        self._handler = handler
        self._json = log_format == "json"
        self._lines: list[str] = []
        self._middles: _Cache[_LineKey, _Middle] = _Cache()
        self._users: _Cache[str, str] = _Cache()

    def add(
        self,
        request_id: str,
        method: str,
        route: str,
        status: int,
        seconds: float,
        user_id: str | None,
    ) -> None:
        stamp = timestamp(time.time())
        milliseconds = str(int(seconds * 1_000_000) / 1000)
        key = (method, route, status)
        if self._json:
            middle = self._middles.get_or_make(key, _json_middle)
            user = "}" if user_id is None else self._users.get_or_make(user_id, _json_user)
            line = (
                f'{{"time":"{stamp}"{middle[0]}{_json_string(request_id)}{middle[1]}'
                f"{milliseconds}{user}"
            )
        else:
            middle = self._middles.get_or_make(key, _text_middle)
            user = "" if user_id is None else self._users.get_or_make(user_id, _text_user)
            line = f"{stamp}{middle[0]}{request_id}{middle[1]}{milliseconds}ms{user}"
        lines = self._lines
        lines.append(line)
        if len(lines) >= self.FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """Write the lines held, in one write."""
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream loses log lines, never requests
        finally:
            handler.release()


def _json_middle(key: _LineKey) -> _Middle:
    method, route, status = key
    return (
        f',"level":"INFO","logger":"{ACCESS_LOGGER}",'
        f'"message":{_json_string(f"{method} {route} {status}")},"request_id":',
        f',"method":{_json_string(method)},"route":{_json_string(route)},'
        f'"status":{status},"duration_ms":',
    )


def _json_user(user_id: str) -> str:
    return f',"user_id":{_json_string(user_id)}}}'


def _text_middle(key: _LineKey) -> _Middle:
    method, route, status = key
    return (f" INFO {ACCESS_LOGGER} [", f"] {method} {route} {status} ")


def _text_user(user_id: str) -> str:
    return f" user={user_id}"
