"""The Bearer header and HS256 token verification: every 401 code, exactly, on every backend."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

import taskapi.auth.tokens as tokens_module
from taskapi.auth.tokens import TokenVerifier
from taskapi.errors import InvalidTokenError, TokenExpiredError
from taskapi.logs import JSONFormatter
from tests.conftest import make_settings
from tests.support.tokens import (
    BAD_REGISTERED_CLAIMS,
    MAX_NUMERIC_DATE,
    TEST_SECRET,
    make_token,
)

TASKS = "/api/v1/tasks"
WRONG_SECRET = "wrong-secret-0123456789abcdef0123456789abcdef"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def sign(
    payload: dict[str, Any],
    *,
    header: dict[str, Any] | None = None,
    secret: str = TEST_SECRET,
    digest: Any = hashlib.sha256,
) -> str:
    """An HMAC-signed compact JWS built by hand, so tests control every byte."""
    head = {"alg": "HS256", "typ": "JWT"} if header is None else header
    signing_input = f"{_segment(head)}.{_segment(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def claims(sub: Any = "alice", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + 600}
    payload.update(extra)
    return {key: value for key, value in payload.items() if value is not ...}


async def _get(client: httpx.AsyncClient, authorization: str | None, **headers: str):
    if authorization is not None:
        headers["Authorization"] = authorization
    return await client.get(TASKS, headers=headers)


def assert_401(response: httpx.Response, code: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == code, body
    assert set(body) == {"detail", "code"}
    assert isinstance(body["detail"], str)
    assert body["detail"]
    challenge = response.headers.get("www-authenticate")
    assert challenge is not None
    assert challenge.startswith("Bearer")


# --- the header ----------------------------------------------------------------------------


async def test_no_authorization_header_is_missing_token(client: httpx.AsyncClient) -> None:
    assert_401(await _get(client, None), "MISSING_TOKEN")


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic eHl6",
        "Basic xyz",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        f"Bearer {make_token('alice')} extra",
        "Token abc",
        f"Bearer{make_token('alice')}",
    ],
    ids=[
        "basic-b64",
        "basic",
        "bearer-no-token",
        "bearer-space-no-token",
        "two-tokens",
        "valid-token-plus-junk",
        "other-scheme",
        "no-space",
    ],
)
async def test_malformed_authorization_header_is_invalid_auth_header(
    client: httpx.AsyncClient, authorization: str
) -> None:
    assert_401(await _get(client, authorization), "INVALID_AUTH_HEADER")


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient, scheme: str) -> None:
    response = await _get(client, f"{scheme} {make_token('alice')}")
    assert response.status_code == 200, response.text
    assert response.json() == []


# --- expiry --------------------------------------------------------------------------------


async def test_expired_token_is_token_expired(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = sign(claims(iat=now - 3600, exp=now - 120))  # well beyond the 30 s leeway
    assert_401(await _get(client, f"Bearer {token}"), "TOKEN_EXPIRED")


async def test_expired_token_via_make_token_is_token_expired(client: httpx.AsyncClient) -> None:
    assert_401(await _get(client, f"Bearer {make_token('alice', ttl=-60)}"), "TOKEN_EXPIRED")


async def test_token_expired_within_leeway_is_accepted(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = sign(claims(iat=now - 600, exp=now - 5))  # 5 s late, leeway is 30 s
    response = await _get(client, f"Bearer {token}")
    assert response.status_code == 200, response.text


async def test_expired_token_with_wrong_secret_is_invalid_not_expired(
    client: httpx.AsyncClient,
) -> None:
    now = int(time.time())
    token = sign(claims(iat=now - 3600, exp=now - 600), secret=WRONG_SECRET)
    assert_401(await _get(client, f"Bearer {token}"), "INVALID_TOKEN")


# --- INVALID_TOKEN ------------------------------------------------------------------------


def _bad_signature() -> str:
    token = make_token("alice")
    head, payload, signature = token.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{payload}.{flipped}{signature[1:]}"


def _alg_none() -> str:
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims())}."


def _alg_none_capitalised() -> str:
    return f"{_segment({'alg': 'None', 'typ': 'JWT'})}.{_segment(claims())}."


def _tampered_payload() -> str:
    head, _, signature = make_token("alice").split(".")
    return f"{head}.{_segment(claims('mallory'))}.{signature}"


def _oversize() -> str:
    token = sign(claims(padding="x" * 9000))
    assert len(token) > 8192
    return token


def _five_parts() -> str:
    # A JWE-like compact serialisation: header.key.iv.ciphertext.tag
    head = _segment({"alg": "dir", "enc": "A256GCM"})
    return f"{head}.{_b64(b'k')}.{_b64(b'iv')}.{_segment(claims())}.{_b64(b'tag')}"


INVALID_TOKENS = {
    "bad-signature": _bad_signature,
    "tampered-payload": _tampered_payload,
    "garbage": lambda: "garbage",
    "garbage-three-parts": lambda: "not.a.jwt",
    "bad-base64-header": lambda: "%%%." + make_token("alice").split(".", 1)[1],
    "header-not-json": lambda: f"{_b64(b'not json')}.{_segment(claims())}.{_b64(b'sig')}",
    "alg-none": _alg_none,
    "alg-none-capitalised": _alg_none_capitalised,
    "wrong-secret": lambda: make_token("alice", secret=WRONG_SECRET),
    "hs512-when-hs256-configured": lambda: sign(
        claims(), header={"alg": "HS512", "typ": "JWT"}, digest=hashlib.sha512
    ),
    "hs384-when-hs256-configured": lambda: sign(
        claims(), header={"alg": "HS384", "typ": "JWT"}, digest=hashlib.sha384
    ),
    "header-claims-hs256-signed-hs512": lambda: sign(claims(), digest=hashlib.sha512),
    "no-exp": lambda: sign(claims(exp=...)),
    "exp-not-a-number": lambda: sign(claims(exp="tomorrow")),
    "oversize": _oversize,
    "five-parts-jwe-like": _five_parts,
    "two-parts": lambda: ".".join(make_token("alice").split(".")[:2]),
    "four-parts": lambda: make_token("alice") + ".extra",
    "jku-header": lambda: sign(
        claims(), header={"alg": "HS256", "typ": "JWT", "jku": "https://evil.test/jwks"}
    ),
    "jwk-header": lambda: sign(
        claims(),
        header={"alg": "HS256", "typ": "JWT", "jwk": {"kty": "oct", "k": _b64(b"attacker")}},
    ),
    "x5u-header": lambda: sign(
        claims(), header={"alg": "HS256", "typ": "JWT", "x5u": "https://evil.test/cert.pem"}
    ),
    "crit-header": lambda: sign(claims(), header={"alg": "HS256", "typ": "JWT", "crit": ["exp"]}),
    "alg-missing": lambda: sign(claims(), header={"typ": "JWT"}),
    "alg-not-a-string": lambda: sign(claims(), header={"alg": ["HS256"], "typ": "JWT"}),
    "nbf-in-future": lambda: sign(claims(nbf=int(time.time()) + 3600)),
    "sub-integer": lambda: sign(claims(sub=12345)),
    "sub-list": lambda: sign(claims(sub=["alice"])),
    "sub-null": lambda: sign(claims(sub=None)),  # not a string, not absent
    "sub-object": lambda: sign(claims(sub={"id": "alice"})),
    "sub-with-nul": lambda: sign(claims(sub="ali\x00ce")),
    "sub-too-long": lambda: sign(claims(sub="a" * 256)),
    "sub-control-char": lambda: sign(claims(sub="ali\nce")),
}


@pytest.mark.parametrize("make", list(INVALID_TOKENS.values()), ids=list(INVALID_TOKENS))
async def test_invalid_tokens_are_invalid_token(client: httpx.AsyncClient, make: Any) -> None:
    token = make()
    assert_401(await _get(client, f"Bearer {token}"), "INVALID_TOKEN")


@pytest.mark.parametrize(
    "overrides", list(BAD_REGISTERED_CLAIMS.values()), ids=list(BAD_REGISTERED_CLAIMS)
)
async def test_registered_claims_of_wrong_type_or_range_are_invalid_token(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, overrides: dict[str, Any]
) -> None:
    """A correctly signed token whose exp/nbf/iat is not a sane NumericDate, or whose sub is
    only white space: 401 INVALID_TOKEN, never a 500 (with its traceback) or an acceptance."""
    caplog.set_level(logging.ERROR)
    response = await _get(client, f"Bearer {sign(claims(**overrides))}")
    assert_401(response, "INVALID_TOKEN")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": time.time() + 600.5},
        {"exp": MAX_NUMERIC_DATE},
        {"iat": time.time() - 0.25, "nbf": 0},
        {"sub": " alice "},
    ],
    ids=["fractional-exp", "exp-at-year-9999", "fractional-iat-nbf-zero", "sub-padded"],
)
async def test_registered_claims_at_their_bounds_are_accepted(
    client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    """NumericDate may be fractional (RFC 7519 section 2); the bounds themselves are valid."""
    response = await _get(client, f"Bearer {sign(claims(**overrides))}")
    assert response.status_code == 200, response.text


class TestBadClaimsCountAsFailedAuthentications:
    """A token refused for its claims is charged to the client address like any failure."""

    @pytest.fixture
    def backend(self) -> str:
        return "sqlite"  # the limiter does not depend on the database

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"rate_limit_enabled": True, "rate_limit_anonymous_per_minute": 2}

    async def test_huge_exp_is_limited_per_address(self, client: httpx.AsyncClient) -> None:
        bad = f"Bearer {sign(claims(exp=10**400))}"
        codes = [(await _get(client, bad)).status_code for _ in range(4)]
        assert codes == [401, 401, 429, 429]


async def test_nbf_within_leeway_is_accepted(client: httpx.AsyncClient) -> None:
    token = sign(claims(nbf=int(time.time()) + 5))
    response = await _get(client, f"Bearer {token}")
    assert response.status_code == 200, response.text


async def test_hand_built_hs256_token_is_accepted(client: httpx.AsyncClient) -> None:
    """The hand-built tokens above differ from a valid one only in what each case breaks."""
    response = await _get(client, f"Bearer {sign(claims())}")
    assert response.status_code == 200, response.text
    with_kid = sign(claims(), header={"alg": "HS256", "typ": "JWT", "kid": "k1"})
    assert (await _get(client, f"Bearer {with_kid}")).status_code == 200


async def test_token_of_exactly_max_size_is_not_refused_for_size(
    client: httpx.AsyncClient,
) -> None:
    base = sign(claims(padding=""))
    token = base
    pad = 0
    while len(token) < 8192:
        pad += 1
        token = sign(claims(padding="x" * pad))
    # Trim to at most 8192 characters.
    while len(token) > 8192:
        pad -= 1
        token = sign(claims(padding="x" * pad))
    assert len(token) <= 8192
    response = await _get(client, f"Bearer {token}")
    assert response.status_code == 200, response.text


# --- MISSING_SUB_CLAIM --------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [claims(sub=...), claims(sub="")],
    ids=["no-sub", "empty-sub"],
)
async def test_token_without_sub_is_missing_sub_claim(
    client: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    assert_401(await _get(client, f"Bearer {sign(payload)}"), "MISSING_SUB_CLAIM")


async def test_make_token_without_sub_is_missing_sub_claim(client: httpx.AsyncClient) -> None:
    token = make_token(None)
    assert_401(await _get(client, f"Bearer {token}"), "MISSING_SUB_CLAIM")


# --- every 401 carries the challenge; failures are logged safely ---------------------------


async def test_every_task_route_answers_401_with_challenge(client: httpx.AsyncClient) -> None:
    bad = {"Authorization": "Bearer garbage"}
    calls = [
        ("GET", TASKS, None),
        ("POST", TASKS, {"title": "x"}),
        ("GET", f"{TASKS}/1", None),
        ("PUT", f"{TASKS}/1", {"title": "x"}),
        ("DELETE", f"{TASKS}/1", None),
    ]
    for method, url, body in calls:
        response = await client.request(method, url, json=body, headers=bad)
        assert_401(response, "INVALID_TOKEN")


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "MISSING_TOKEN"),
        ("Basic xyz", "INVALID_AUTH_HEADER"),
        ("Bearer SECRET-LOOKING-GARBAGE-TOKEN-VALUE", "INVALID_TOKEN"),
        (f"Bearer {make_token('alice', secret=WRONG_SECRET)}", "INVALID_TOKEN"),
        (f"Bearer {make_token('alice', ttl=-3600)}", "TOKEN_EXPIRED"),
        (f"Bearer {make_token(None)}", "MISSING_SUB_CLAIM"),
    ],
    ids=["missing", "bad-header", "garbage", "wrong-secret", "expired", "no-sub"],
)
async def test_auth_failures_are_logged_with_code_and_request_id_never_token(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    authorization: str | None,
    code: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskapi.auth")
    # The service's format, applied as each line is written: it names the request's id.
    caplog.handler.setFormatter(JSONFormatter())
    request_id = "req-auth-log-0001"
    response = await _get(client, authorization, **{"X-Request-ID": request_id})
    assert_401(response, code)
    assert response.headers["x-request-id"] == request_id

    records = [record for record in caplog.records if record.name == "taskapi.auth"]
    messages = [record.getMessage() for record in records]
    matching = [message for message in messages if code in message]
    assert matching, messages
    lines = [json.loads(line) for line in caplog.text.splitlines()]
    written = [
        line for line in lines if line["logger"] == "taskapi.auth" and code in line["message"]
    ]
    assert written, lines
    assert all(line["request_id"] == request_id for line in written), written

    if authorization is not None:
        secret_parts = [part for part in authorization.split(" ", 1)[-1].split(".") if part]
        everything = caplog.text + "\n".join(messages)
        for record in caplog.records:
            everything += repr(record.args) + str(record.msg) + str(record.__dict__)
        assert authorization.split(" ", 1)[-1] not in everything
        for part in secret_parts:
            if len(part) >= 8:
                assert part not in everything


# --- the verifier's cache (unit tests, fake clock) -----------------------------------------


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def _install_clock(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """One fake clock for the verifier's cache and for PyJWT's claim checks."""

    class _Time:
        @staticmethod
        def time() -> float:
            return clock.now

        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

    class _DateTime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(clock.now, tz or UTC)

    monkeypatch.setattr(tokens_module, "time", _Time())
    monkeypatch.setattr(jwt.api_jwt, "datetime", _DateTime)


async def test_cached_token_that_expires_later_is_token_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(None, jwt_leeway_seconds=0)
    verifier = TokenVerifier(settings)
    start = float(int(time.time()))
    clock = FakeClock(start)
    _install_clock(monkeypatch, clock)

    token = sign({"sub": "alice", "iat": int(start), "exp": int(start) + 1})
    identity = await verifier.verify(token)
    assert identity.sub == "alice"
    assert token in verifier._cache  # the verified token is remembered

    clock.now = start + 0.5
    assert (await verifier.verify(token)).sub == "alice"  # still valid, served from cache

    clock.now = start + 5
    with pytest.raises(TokenExpiredError) as info:
        await verifier.verify(token)
    assert info.value.code == "TOKEN_EXPIRED"
    assert info.value.status_code == 401
    # And again: an expired token never comes back from the cache.
    with pytest.raises(TokenExpiredError):
        await verifier.verify(token)


async def test_cached_token_respects_leeway(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(None, jwt_leeway_seconds=30)
    verifier = TokenVerifier(settings)
    start = float(int(time.time()))
    clock = FakeClock(start)
    _install_clock(monkeypatch, clock)

    token = sign({"sub": "alice", "iat": int(start), "exp": int(start) + 1})
    assert (await verifier.verify(token)).sub == "alice"
    clock.now = start + 20  # expired, but within the leeway
    assert (await verifier.verify(token)).sub == "alice"
    clock.now = start + 40
    with pytest.raises(TokenExpiredError):
        await verifier.verify(token)


async def test_verifier_unit_invalid_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(make_settings(None))
    token = make_token("alice", secret=WRONG_SECRET)
    for _ in range(2):
        with pytest.raises(InvalidTokenError) as info:
            await verifier.verify(token)
        assert info.value.code == "INVALID_TOKEN"
    assert token not in verifier._cache
