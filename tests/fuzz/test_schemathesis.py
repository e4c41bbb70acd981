"""Schema fuzzing: schemathesis against the service's own /openapi.json, on SQLite and PostgreSQL.

Stateless: every operation, positive and negative data (examples, coverage and fuzzing phases),
with every built-in check (server errors, status codes, content types, response schemas and
headers, negative data rejection, positive data acceptance, unsupported methods, missing
headers, ignored auth). Stateful: the state machine over the links schemathesis infers from
the schema (POST -> GET/PUT/DELETE by id, ...), where `use_after_free` and
`ensure_resource_availability` also apply.

How it is wired:

- `schemathesis.pytest.from_fixture` cannot be used: it writes `Node._nodeid`, which pytest 9.2
  removed. So the schema is loaded at import time through `from_asgi` from a `CurrentApp`
  proxy, which forwards every request to the app of the running test (one per backend).
- The app's lifespan (which creates the engine) must run on schemathesis's event loop, the one
  requests are served on; `schemathesis.python.asgi.get_client(app)` starts it there.
- Every request carries a valid HS256 token (`headers` in the config), so `ignored_auth`
  sees explicit credentials and probes each operation without and with a bad token.

Bounded for CI: `FUZZ_MAX_EXAMPLES` (100) per operation, `FUZZ_STATEFUL_EXAMPLES` (50)
scenarios of up to `FUZZ_STATEFUL_STEPS` (10) calls.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.python import asgi as st_asgi

from taskapi.app import create_app
from taskapi.config import Settings
from taskapi.tasks.contract import MAX_TASK_ID, Cursor, InvalidCursorError
from tests.conftest import make_settings
from tests.support.tokens import make_token

FUZZ_BACKENDS = ("sqlite", "postgresql")
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))
STATEFUL_EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", "50"))
STATEFUL_STEPS = int(os.environ.get("FUZZ_STATEFUL_STEPS", "10"))
TOKEN_TTL = 3600


class CurrentApp:
    """The ASGI app the schema is bound to: forwards each request to the running test's app.

    Its own lifespan does nothing; the fixture starts the real app's lifespan.
    """

    def __init__(self, default: FastAPI) -> None:
        self.default = default
        self.app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await (self.app or self.default)(scope, receive, send)


# The default app only serves /openapi.json, which needs neither the lifespan nor a database.
CURRENT = CurrentApp(create_app(make_settings("sqlite:///:memory:")))
CONFIG = schemathesis.Config.from_dict(
    {
        "headers": {"Authorization": f"Bearer {make_token('fuzzer', ttl=TOKEN_TTL)}"},
        "generation": {"max-examples": MAX_EXAMPLES},
    }
)
schema = schemathesis.openapi.from_asgi("/openapi.json", CURRENT, config=CONFIG)


PLAIN_LIST_PARAMETERS = frozenset({"completed", "priority", "limit", "cursor"})


@schema.hook("map_case")
def valid_cursor_in_positive_cases(context: Any, case: schemathesis.Case) -> schemathesis.Case:
    """A positive case's `cursor` must be a cursor the service issued, not any short string.

    The cursor is opaque (the `Link` of the previous page); JSON Schema cannot say which strings
    decode, so positive cases get a well-formed cursor for a drawn id. Negative cases, and the
    service's 422 for a forged cursor, are left as they are.
    """
    query = case.query or {}
    cursor = query.get("cursor")
    if (
        case.meta is None
        or not case.meta.generation.mode.is_positive
        or not isinstance(cursor, str)
    ):
        return case
    if set(query) - PLAIN_LIST_PARAMETERS:
        # With a sort or filters beyond these, a cursor is bound to them (a `KeysetCursor`
        # holding the last task's sort values): schemathesis cannot draw one, so positive
        # cases go without; tests/tasks/test_screens.py follows such cursors.
        case.query = {name: value for name, value in query.items() if name != "cursor"}
        return case
    try:
        Cursor.decode(cursor)
    except InvalidCursorError:
        digest = int.from_bytes(
            hashlib.sha256(cursor.encode("utf-8", "surrogatepass")).digest()[:8]
        )
        last_id = digest % 64 if digest & 1 else digest % (MAX_TASK_ID + 1)
        case.query = {**query, "cursor": Cursor.encode(last_id)}
    return case


@pytest.fixture(params=FUZZ_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """SQLite and PostgreSQL (overrides conftest's, which adds PgBouncer)."""
    return str(request.param)


@pytest.fixture
def fuzz_app(settings: Settings) -> Iterator[FastAPI]:
    """The service on the test's backend, its lifespan running on schemathesis's event loop."""
    app = create_app(settings)
    with st_asgi.get_client(app):  # type: ignore[arg-type]  # FastAPI is an ASGI app
        pass
    CURRENT.app = app
    try:
        yield app
    finally:
        CURRENT.app = None
        st_asgi.shutdown_lifespans()


@pytest.fixture
def calls(request: pytest.FixtureRequest, backend: str) -> Iterator[Counter[str]]:
    """Counts the requests a test sent; printed with `-s` / `-rA`."""
    counter: Counter[str] = Counter()
    yield counter
    print(f"\n[fuzz] {backend} {request.node.name}: {dict(counter)}")


@schema.parametrize()
@hypothesis.settings(
    deadline=None,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_api(case: schemathesis.Case, fuzz_app: FastAPI, calls: Counter[str]) -> None:
    mode = case.meta.generation.mode.value if case.meta else "explicit"
    calls[mode] += 1
    case.call_and_validate()


def test_stateful(fuzz_app: FastAPI, calls: Counter[str]) -> None:
    class TaskWorkflow(schema.as_state_machine()):  # type: ignore[misc]
        """Each scenario runs as a fresh user, so earlier scenarios' tasks never show up in it
        (which would make the responses, and so the links, differ when Hypothesis replays)."""

        def setup(self) -> None:
            self.user = f"fuzz-{uuid.uuid4().hex}"
            self.auth = {"Authorization": f"Bearer {make_token(self.user, ttl=TOKEN_TTL)}"}
            calls["scenarios"] += 1

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": self.auth}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            calls["calls"] += 1
            if case.path.startswith("/api/") and 200 <= response.status_code < 300:
                body = response.json() if response.content else None
                tasks = body if isinstance(body, list) else [body] if body else []
                assert all(task["user_id"] == self.user for task in tasks), body

    TaskWorkflow.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            database=None,
            suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
        )
    )
