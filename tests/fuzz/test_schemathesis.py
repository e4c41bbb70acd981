"""Schema fuzzing: schemathesis against the service's own /openapi.json, on SQLite and PostgreSQL.

Stateless: every operation, positive and negative data (examples, coverage and fuzzing phases),
with every built-in check (server errors, status codes, content types, response schemas and
headers, negative data rejection, positive data acceptance, unsupported methods, missing
headers, ignored auth). Stateful: state machines over the schema's links and those
schemathesis infers (a created task to its GET/PUT/PATCH/DELETE, a created list to its own and
to a task created into it, ...), where `use_after_free` and `ensure_resource_availability`
also apply: one over every operation, one over the tasks' alone (see `_tasks_only`). Rate
limiting is off (conftest's settings).

Every case is sent as schemathesis generated it: no hook rewrites one. So the schema must say
exactly what the service accepts (the cursors' format, the range of dates, what a label may
be), and a positive case may only be answered 2xx, or 404 `TASK_NOT_FOUND`, `LIST_NOT_FOUND` or
`LABEL_NOT_FOUND` for an id or name that names nothing, or what the state it met refuses with
that state's own code (`STATEFUL_REFUSALS`: a list that is not the user's, a stale `If-Match`,
a keyset cursor not issued for the request's sort and filters, which no schema can say)
(`positive_data_acceptance` is configured so per operation; its default also lets 401, 403,
409, 429 and 5xx pass). And a run must have tested something: an expired token, say, would
answer every case 401 and pass every other check. So each operation without an id or name in
its path must answer most of its positive cases 2xx (an unbound cursor counts apart, as a
conditional answer does), and so must the stateful run, where the ids come from created tasks.

How it is wired:

- `schemathesis.pytest.from_fixture` cannot be used: it writes `Node._nodeid`, which pytest 9.2
  removed. So the schema is loaded at import time through `from_asgi` from a `CurrentApp`
  proxy, which forwards every request to the app of the running test (one per backend).
- The app's lifespan (which creates the engine) must run on schemathesis's event loop, the one
  requests are served on; `schemathesis.python.asgi.get_client(app)` starts it there.
- Every request carries a valid HS256 token (the bearer scheme's `auth` in the config), so
  `ignored_auth` sees explicit credentials and probes each operation without and with a bad token.

Bounded for CI: `FUZZ_MAX_EXAMPLES` (100) per operation, `FUZZ_STATEFUL_EXAMPLES` (50)
scenarios of up to `FUZZ_STATEFUL_STEPS` (10) calls.
"""

from __future__ import annotations

import copy
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
from taskapi.tasks.contract import InvalidCursorError
from tests.conftest import make_settings
from tests.support.tokens import make_token

FUZZ_BACKENDS = ("sqlite", "postgresql")
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))
STATEFUL_EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", "50"))
STATEFUL_STEPS = int(os.environ.get("FUZZ_STATEFUL_STEPS", "10"))
TOKEN_TTL = 3600
# Positive cases an operation (without a task id) or the stateful run must answer 2xx: most.
MIN_POSITIVE_2XX_SHARE = 0.5


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
        # Through the security scheme, so schemathesis knows the credentials are given (and
        # probes each operation without them and with bad ones), never generates its own.
        "auth": {"openapi": {"bearerAuth": {"bearer": make_token("fuzzer", ttl=TOKEN_TTL)}}},
        "generation": {"max-examples": MAX_EXAMPLES},
        "checks": {
            "enabled": True,
            "positive_data_acceptance": {"expected-statuses": ["2xx", "404"]},
        },
        # Refusals that depend on state, not on the request's form; each is allowed only with
        # its own code (checked in `STATEFUL_REFUSALS` below).
        "operations": [
            {
                # By name: `include-path` and `include-method` are two filters, either of
                # which selects an operation.
                "include-name": "POST /api/v1/tasks",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "422"]}},
            },
            {
                "include-path": "/api/v1/tasks/changes",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", "410", "422"]}
                },
            },
            {
                # A cursor of the keyset form that was not issued for the request's sort and
                # filters (it is bound to them).
                "include-name": "GET /api/v1/tasks",
                # ... and 414 for a query over the service's 8 KiB bound on the request target,
                # which the longest cursor (4,096), twenty labels and `q` together can reach.
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", "414", "422"]},
                    "negative_data_rejection": {
                        "expected-statuses": [
                            "400",
                            "401",
                            "403",
                            "404",
                            "405",
                            "406",
                            "409",
                            "414",
                            "415",
                            "422",
                            "428",
                            "429",
                            "5xx",
                        ]
                    },
                },
            },
            {
                "include-path": "/api/v1/tasks/{task_id}",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "304", "404", "412", "422"]
                    }
                },
                # Schemathesis 4.32's coverage phase sends `If-Match: 0` as a *positive* value
                # of the entity-tag pattern (a generator false positive, like its issue #4592);
                # the examples and fuzzing phases still cover these operations.
                "phases": {"coverage": {"enabled": False}},
            },
            {
                # 404 LIST_NOT_FOUND; 422 LIST_NOT_FOUND for `move_tasks_to`.
                "include-path": "/api/v1/lists/{list_id}",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "422"]}
                },
            },
            {
                "include-path": "/api/v1/labels/{name}",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404"]}},
            },
        ],
    }
)
# A schema-valid request may still be refused for the state it meets: a key already used with
# another body, a sync token of no user (a fuzzer's) or too old, a stale If-Match, a list or
# label the user does not have, a cursor not issued for the request's sort and filters.
STATEFUL_REFUSALS = {
    422: {"IDEMPOTENCY_KEY_REUSED", "VALIDATION_ERROR", "LIST_NOT_FOUND"},
    410: {"SYNC_TOKEN_EXPIRED"},
    412: {"PRECONDITION_FAILED"},
}
# What a positive case's 404 may be, by the path parameter that named nothing.
NOT_FOUND = {
    "{task_id}": "TASK_NOT_FOUND",
    "{list_id}": "LIST_NOT_FOUND",
    "{name}": "LABEL_NOT_FOUND",
}
# Answers to conditional requests (304 Not Modified, 412 Precondition Failed) and to a retry
# while the first attempt runs (409): what the request asked for, so neither success nor
# refusal in the share of 2xx.
CONDITIONAL = frozenset({304, 409, 412})
TOKEN_REFUSED = "query.since: invalid sync token; use the `next` of an earlier answer"
CURSOR_REFUSED = InvalidCursorError.detail
schema = schemathesis.openapi.from_asgi("/openapi.json", CURRENT, config=CONFIG)


def _tasks_only(full: Any) -> Any:
    """The tasks' operations, without `list_id`, on the same app: the state machine of a
    task's life. In one machine with the lists and labels, these crowded out the tasks'
    chains of links: schemathesis takes a `list_id` for a reference to a list, and so starts
    only from the lists (a created list links to a task created into it: the machine of
    everything covers that); a run read a task by the id it got a few times or never. The
    stateless test has the whole schema."""
    raw = copy.deepcopy(full.raw_schema)
    raw["paths"] = {path: ops for path, ops in raw["paths"].items() if path.startswith(TASKS)}
    for operation in raw["paths"][TASKS].values():
        parameters = operation.get("parameters", [])
        operation["parameters"] = [p for p in parameters if p["name"] != "list_id"]
    for model in ("TaskCreate", "TaskUpdate"):
        raw["components"]["schemas"][model]["properties"].pop("list_id")
    loaded = schemathesis.openapi.from_dict(raw, config=CONFIG)
    loaded.app = CURRENT
    loaded.location = "/openapi.json"
    return loaded


TASKS = "/api/v1/tasks"
STATE_MACHINES = {"tasks": _tasks_only(schema), "everything": schema}


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


class Tally(Counter[str]):
    """What a test's cases got: per generation mode, how many, and how many were 2xx."""

    def record(self, case: schemathesis.Case, status: int, for_state: bool = False) -> None:
        mode = case.meta.generation.mode.value if case.meta else "explicit"
        if status in CONDITIONAL or for_state:  # answered by the state the request met
            self[f"{mode} conditional"] += 1
            return
        self[mode] += 1
        if 200 <= status < 300:
            self[f"{mode} 2xx"] += 1

    def positive_2xx_share(self) -> float:
        return self["positive 2xx"] / self["positive"] if self["positive"] else 0.0

    def summary(self) -> str:
        return (
            f"{sum(self[m] for m in ('positive', 'negative', 'explicit'))} cases: "
            f"{self['positive']} positive ({self['positive 2xx']} 2xx, "
            f"{self.positive_2xx_share():.0%}), {self['negative']} negative"
        )


def _has_task_id(case: schemathesis.Case) -> bool:
    return "{task_id}" in case.path


def _has_id(case: schemathesis.Case) -> bool:
    """A path naming something (a task, a list, a label) that a drawn value may not name."""
    return "{" in case.path


def _refused_for_state(case: schemathesis.Case, response: Any) -> bool:
    """A refusal of what the request named, not of its form: a list that is not the user's
    (a task's `list_id`, `move_tasks_to`: 422 LIST_NOT_FOUND), or a keyset cursor not issued
    for the request's sort and filters. Counted apart from the share of 2xx, as conditional
    answers are: in the stateful run of the tasks alone no list exists, so every `list_id`
    drawn names none."""
    if response.status_code != 422 or not response.content:
        return False
    if response.json().get("code") == "LIST_NOT_FOUND":
        return True
    return _unbound_cursor(case, response)


def _unbound_cursor(case: schemathesis.Case, response: Any) -> bool:
    """A list request refused for a cursor of the keyset form that was not issued for its
    sort and filters: the answer to what it asked, neither success nor a refusal of its form
    (the schema states the cursors' form, not which sort and filters a cursor is bound to)."""
    if response.status_code != 422 or case.path != "/api/v1/tasks":
        return False
    return bool(response.json().get("detail") == CURSOR_REFUSED)


@pytest.fixture
def tally(request: pytest.FixtureRequest, backend: str) -> Iterator[Tally]:
    """Counts what the test's cases got; printed with `-s` / `-rA`. After all the cases of a
    stateless operation without a task id, most of its positive ones must have been 2xx (an
    id drawn at random names no task: those answer 404, checked case by case)."""
    counter = Tally()
    yield counter
    print(f"\n[fuzz] {backend} {request.node.name}: {counter.summary()}")
    if request.node.originalname == "test_api" and not counter["by id"]:
        assert counter.positive_2xx_share() > MIN_POSITIVE_2XX_SHARE, counter.summary()


@schema.parametrize()
@hypothesis.settings(
    deadline=None,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_api(case: schemathesis.Case, fuzz_app: FastAPI, tally: Tally) -> None:
    tally["by id"] = int(_has_id(case))
    response = case.call()
    tally.record(case, response.status_code, _refused_for_state(case, response))
    case.validate_response(response)
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and response.status_code == 404:
        # Only what does not exist (a task, a list, a label), which the token's user was
        # checked for.
        codes = [code for name, code in NOT_FOUND.items() if name in case.path]
        assert codes, response.text
        assert response.json()["code"] == codes[0], response.text
    if positive and response.status_code in STATEFUL_REFUSALS:
        assert_stateful_refusal(case, response)


def assert_stateful_refusal(case: schemathesis.Case, response: Any) -> None:
    """A positive case refused for the state it met, with that state's own code: never a
    VALIDATION_ERROR about the request's form (only a sync token of no user's, or a cursor
    not issued for the request's sort and filters, is one); LIST_NOT_FOUND only where a list
    is named (a task's `list_id`, `move_tasks_to`)."""
    body = response.json()
    assert body["code"] in STATEFUL_REFUSALS[response.status_code], response.text
    if body["code"] == "VALIDATION_ERROR":
        if case.path.endswith("/changes"):
            assert body["detail"] == TOKEN_REFUSED, response.text
        else:
            assert _unbound_cursor(case, response), response.text
    if body["code"] == "LIST_NOT_FOUND":
        assert case.path.startswith(("/api/v1/tasks", "/api/v1/lists/")), response.text


# What each stateful run must have done, by the path parameter naming what was created:
# each of these methods answered 2xx on an id that a response gave.
BY_ID = {
    "tasks": {"{task_id}": {"GET", "PUT", "PATCH", "DELETE"}},
    "everything": {"{list_id}": {"GET", "PATCH", "DELETE"}},
}


@pytest.mark.parametrize("machine", list(STATE_MACHINES))
def test_stateful(fuzz_app: FastAPI, tally: Tally, machine: str) -> None:
    by_id_2xx: Counter[tuple[str, str]] = Counter()

    class Workflow(STATE_MACHINES[machine].as_state_machine()):  # type: ignore[misc]
        """Each scenario runs as a fresh user, so earlier scenarios' tasks never show up in it
        (which would make the responses, and so the links, differ when Hypothesis replays)."""

        def setup(self) -> None:
            self.user = f"fuzz-{uuid.uuid4().hex}"
            self.auth = {"Authorization": f"Bearer {make_token(self.user, ttl=TOKEN_TTL)}"}
            tally["scenarios"] += 1

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            # The scenario's user in place of the configured one; a negative case that left
            # the token out goes without (its missing header is what it tests).
            sent = {name.lower() for name in case.headers or {}}
            return {"headers": self.auth if "authorization" in sent else {}}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            tally.record(case, response.status_code, _refused_for_state(case, response))
            if not 200 <= response.status_code < 300:
                return
            for by_id in ("{task_id}", "{list_id}"):
                if by_id in case.path:
                    by_id_2xx[(by_id, case.method.upper())] += 1
            if case.path.startswith("/api/v1/me") and response.status_code == 200:
                assert response.json()["id"] == self.user, response.text
            if case.path.startswith("/api/v1/tasks"):
                body = response.json() if response.content else None
                if case.path.endswith("/changes") and isinstance(body, dict):
                    body = [change for change in body["changes"] if not change.get("deleted")]
                tasks = body if isinstance(body, list) else [body] if body else []
                assert all(task["user_id"] == self.user for task in tasks), body

    Workflow.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            database=None,
            suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
        )
    )
    print(f"\n[fuzz] stateful 2xx by id: {dict(by_id_2xx)}")
    assert tally.positive_2xx_share() > MIN_POSITIVE_2XX_SHARE, tally.summary()
    # The links were followed: what was created was read, changed and deleted by its id.
    for by_id, methods in BY_ID[machine].items():
        done = {method for name, method in by_id_2xx if name == by_id}
        assert done == methods, (by_id, dict(by_id_2xx))
