"""TokenVerifier in JWKS mode, without Node: real JWKSCache, mock JWKS endpoint, local keys.

Every refusal the issue lists is checked here: `none`, HS256 signed with a published public
key, key-choosing headers (jku/x5u/jwk/x5c/x5t/crit), five-part (JWE) tokens, algorithm/key-type
mismatches, algorithms outside the allow-list, hostile kids, wrong iss/aud (with a log line
naming the setting), nbf in the future, missing exp/sub, expiry, oversize tokens, and an
unreachable key set (503 AUTH_ERROR with Retry-After, never a hang).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from taskapi.auth.jwks import JWKSCache
from taskapi.auth.tokens import Identity, TokenVerifier
from taskapi.errors import AuthUnavailableError, InvalidTokenError
from tests.conftest import make_settings
from tests.support.tokens import BAD_REGISTERED_CLAIMS, MAX_NUMERIC_DATE, TEST_SECRET

BASE_URL = "http://auth.local"
JWKS_URL = f"{BASE_URL}/api/auth/jwks"
COOLDOWN = 10.0


# -- keys ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """A private key, the kid it is published under and the algorithm it signs with."""

    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]  # the public JWK as published

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _public_jwk(private: Any, kid: str, alg: str | None) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(private, ed25519.Ed25519PrivateKey):
        data: dict[str, Any] = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64(public.public_bytes_raw()),
        }
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    else:
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    data = {k: v for k, v in data.items() if k in ("kty", "crv", "x", "y", "n", "e")}
    data["kid"] = kid
    if alg is not None:
        data["alg"] = alg
    return data


def _key(kid: str, alg: str, private: Any, *, declare_alg: bool = True) -> SigningKey:
    return SigningKey(kid, alg, private, _public_jwk(private, kid, alg if declare_alg else None))


ED = _key("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate())
EC = _key("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))
RSA = _key("rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
# The same kinds of key published WITHOUT an `alg` member: only kty/crv can stop a mismatch.
RSA_NOALG = _key(
    "rsa-noalg",
    "RS256",
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
    declare_alg=False,
)
P521_NOALG = _key("p521-noalg", "ES512", ec.generate_private_key(ec.SECP521R1()), declare_alg=False)
P521 = _key("p521-1", "ES512", ec.generate_private_key(ec.SECP521R1()))
PUBLISHED = [ED, EC, RSA, RSA_NOALG, P521_NOALG, P521]
# Never published: what an attacker signs with.
ATTACKER = _key("attacker", "EdDSA", ed25519.Ed25519PrivateKey.generate())


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims shaped like Better Auth's JWT payload (iss = aud = its base URL)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": "user-123",
        "id": "user-123",
        "email": "alice@example.com",
        "name": "Alice",
        "image": "https://img.example/alice.png",
        "emailVerified": True,
        "iat": now,
        "exp": now + 900,
        "iss": BASE_URL,
        "aud": BASE_URL,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not ...}


def sign(
    key: SigningKey = ED,
    payload: dict[str, Any] | None = None,
    *,
    alg: str | None = None,
    kid: str | object | None = ...,
    **headers: Any,
) -> str:
    """A token signed by `key` (kid defaults to the key's; None leaves it out)."""
    header: dict[str, Any] = {"kid": key.kid if kid is ... else kid, **headers}
    if header["kid"] is None:
        del header["kid"]
    return jwt.encode(
        claims() if payload is None else payload,
        key.private,
        algorithm=alg or key.alg,
        headers=header,
    )


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand (for what PyJWT refuses to produce)."""
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{head}.{body}.{_b64(signature)}"


def hs256_with(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """An HS256 token whose HMAC key is `secret` (e.g. a public key's bytes)."""
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


# -- the key set -----------------------------------------------------------------------------


class Endpoint:
    """A JWKS endpoint behind httpx.MockTransport."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = [k.jwk for k in PUBLISHED]
        self.status = 200
        self.error: Exception | None = None
        self.hang = False
        self.urls: list[str] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        if self.hang:
            await asyncio.Event().wait()  # never answers
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status, json={"keys": self.keys})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _never(delay: float) -> None:
    await asyncio.Event().wait()


@dataclass
class Harness:
    endpoint: Endpoint
    clock: FakeClock
    make: Callable[..., Awaitable[tuple[TokenVerifier, JWKSCache]]]


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    endpoint = Endpoint()
    clock = FakeClock()
    caches: list[JWKSCache] = []
    clients: list[httpx.AsyncClient] = []

    async def make(
        *, fetch_timeout: float = 3.0, start: bool = True, **overrides: Any
    ) -> tuple[TokenVerifier, JWKSCache]:
        overrides.setdefault("jwks_url", JWKS_URL)
        settings = make_settings(None, **overrides)
        client = httpx.AsyncClient(transport=httpx.MockTransport(endpoint.handler))
        clients.append(client)
        assert settings.jwks_url is not None
        cache = JWKSCache(
            settings.jwks_url,
            client=client,
            ttl=300.0,
            refetch_cooldown=COOLDOWN,
            fetch_timeout=fetch_timeout,
            clock=clock,
            sleep=_never,
        )
        caches.append(cache)
        if start:
            await cache.start()
        return TokenVerifier(settings, cache), cache

    yield Harness(endpoint, clock, make)
    for cache in caches:
        await cache.aclose()
    for client in clients:
        await client.aclose()


async def refused(verifier: TokenVerifier, token: str, code: str = "INVALID_TOKEN") -> None:
    with pytest.raises(InvalidTokenError) as info:
        await verifier.verify(token)
    assert info.value.code == code
    assert info.value.status_code == 401


# -- accepted tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("key", [ED, EC, RSA, P521], ids=lambda k: k.alg)
async def test_valid_token_gives_identity_with_profile(harness: Harness, key: SigningKey) -> None:
    verifier, _ = await harness.make()
    identity = await verifier.verify(sign(key))
    assert isinstance(identity, Identity)
    assert identity.sub == "user-123"
    assert identity.email == "alice@example.com"
    assert identity.name == "Alice"
    assert identity.avatar_url == "https://img.example/alice.png"


async def test_valid_token_in_jwks_only_mode(harness: Harness) -> None:
    verifier, _ = await harness.make(jwt_secret=None)
    assert (await verifier.verify(sign(ED))).sub == "user-123"


async def test_audience_list_containing_base_url_is_accepted(harness: Harness) -> None:
    verifier, _ = await harness.make()
    token = sign(ED, claims(aud=["https://other.example", BASE_URL]))
    assert (await verifier.verify(token)).sub == "user-123"


# -- algorithm: from the allow-list and the key type, never from the token alone -------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", [b"", b"sig"], ids=["empty-sig", "junk-sig"])
async def test_alg_none_is_refused(harness: Harness, alg: str, signature: bytes) -> None:
    verifier, _ = await harness.make()
    await refused(
        verifier, raw_token({"alg": alg, "typ": "JWT", "kid": ED.kid}, claims(), signature)
    )


async def test_alg_none_from_pyjwt_is_refused(harness: Harness) -> None:
    verifier, _ = await harness.make(jwt_secret=None)
    token = jwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]
    await refused(verifier, token)


def _confusion_secrets() -> list[tuple[str, bytes, str]]:
    """(label, HMAC key an attacker could derive from the JWKS, kid it points at)."""
    rsa_public = RSA.private.public_key()
    return [
        ("rsa-spki-pem", RSA.public_pem, RSA.kid),
        (
            "rsa-pkcs1-pem",
            rsa_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
            RSA.kid,
        ),
        ("rsa-noalg-pem", RSA_NOALG.public_pem, RSA_NOALG.kid),
        ("ec-pem", EC.public_pem, EC.kid),
        ("ed-pem", ED.public_pem, ED.kid),
        ("ed-raw", ED.private.public_key().public_bytes_raw(), ED.kid),
        ("ed-jwk-json", json.dumps(ED.jwk).encode(), ED.kid),
        ("rsa-jwk-json", json.dumps(RSA.jwk).encode(), RSA.kid),
    ]


@pytest.mark.parametrize("jwt_secret", [TEST_SECRET, None], ids=["with-secret", "jwks-only"])
@pytest.mark.parametrize(
    ("label", "secret", "kid"), _confusion_secrets(), ids=[c[0] for c in _confusion_secrets()]
)
async def test_hs256_signed_with_published_public_key_is_refused(
    harness: Harness, jwt_secret: str | None, label: str, secret: bytes, kid: str
) -> None:
    verifier, _ = await harness.make(jwt_secret=jwt_secret)
    for header in ({"alg": "HS256", "typ": "JWT", "kid": kid}, {"alg": "HS256", "typ": "JWT"}):
        await refused(verifier, hs256_with(secret, header, claims()))


@pytest.mark.filterwarnings("ignore:The HMAC key")
@pytest.mark.parametrize("alg", ["HS384", "HS512"])
async def test_other_hmac_algorithms_are_refused(harness: Harness, alg: str) -> None:
    verifier, _ = await harness.make()
    token = jwt.encode(claims(), TEST_SECRET, algorithm=alg)  # even with the right secret
    await refused(verifier, token)


@pytest.mark.parametrize(
    "target",
    [RSA, RSA_NOALG, EC, P521_NOALG],
    ids=["rsa", "rsa-without-alg", "ec", "p521-without-alg"],
)
async def test_eddsa_token_with_kid_of_other_key_type_is_refused(
    harness: Harness, target: SigningKey
) -> None:
    verifier, _ = await harness.make()
    await refused(verifier, sign(ED, kid=target.kid))


async def test_es256_token_against_p521_key_is_refused(harness: Harness) -> None:
    verifier, _ = await harness.make()
    # Signed with the right curve but pointing at a P-521 key (with and without `alg`).
    await refused(verifier, sign(EC, kid=P521_NOALG.kid))
    await refused(verifier, sign(EC, kid=P521.kid))
    # Signed with the P-521 key itself but claiming ES256: wrong curve for the algorithm.
    token = raw_token({"alg": "ES256", "kid": P521_NOALG.kid}, claims(), b"\x00" * 132)
    await refused(verifier, token)


async def test_rs256_token_with_kid_of_ec_key_is_refused(harness: Harness) -> None:
    verifier, _ = await harness.make()
    await refused(verifier, sign(RSA, kid=EC.kid))


async def test_declared_alg_of_key_must_match(harness: Harness) -> None:
    verifier, _ = await harness.make()
    # A PS256 signature by the RSA key published for RS256 only.
    await refused(verifier, sign(RSA, alg="PS256"))


@pytest.mark.parametrize(
    ("allowed", "key"),
    [(["EdDSA"], RSA), (["EdDSA"], EC), (["RS256"], ED), (["ES256", "RS256"], P521)],
    ids=["rs256-not-allowed", "es256-not-allowed", "eddsa-not-allowed", "es512-not-allowed"],
)
async def test_algorithm_outside_allow_list_is_refused(
    harness: Harness, allowed: list[str], key: SigningKey
) -> None:
    verifier, _ = await harness.make(jwt_algorithms=allowed)
    await refused(verifier, sign(key))
    # The allowed ones still work.
    allowed_key = next(k for k in (ED, EC, RSA) if k.alg in allowed)
    assert (await verifier.verify(sign(allowed_key))).sub == "user-123"


# -- headers that would let the token choose its key -----------------------------------------


def _forbidden_headers() -> list[tuple[str, dict[str, Any]]]:
    attacker_jwk = _public_jwk(ATTACKER.private, ATTACKER.kid, "EdDSA")
    return [
        ("jku", {"jku": "http://evil.example/jwks"}),
        ("jku-same-origin", {"jku": JWKS_URL}),
        ("x5u", {"x5u": "http://evil.example/cert.pem"}),
        ("jwk", {"jwk": attacker_jwk}),
        ("x5c", {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
        ("x5t", {"x5t": "dGh1bWJwcmludA"}),
        ("x5t#S256", {"x5t#S256": "dGh1bWJwcmludA"}),
        ("crit-unknown", {"crit": ["x-unknown"], "x-unknown": True}),
        ("crit-b64", {"crit": ["b64"], "b64": True}),
    ]


@pytest.mark.parametrize(
    "extra", [h for _, h in _forbidden_headers()], ids=[n for n, _ in _forbidden_headers()]
)
@pytest.mark.parametrize("signer", ["published", "attacker"])
async def test_key_choosing_headers_are_refused(
    harness: Harness, extra: dict[str, Any], signer: str
) -> None:
    verifier, cache = await harness.make()
    # Even a correctly signed token is refused; so is one the attacker signed with its own key.
    token = sign(ED, **extra) if signer == "published" else sign(ATTACKER, kid=None, **extra)
    fetches = cache.fetch_count
    await refused(verifier, token)
    assert cache.fetch_count == fetches
    assert all(url == JWKS_URL for url in harness.endpoint.urls), harness.endpoint.urls


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RSA-OAEP", "enc": "A256GCM", "kid": RSA.kid},
        {"alg": "dir", "enc": "A128CBC-HS256"},
        {"alg": "EdDSA", "kid": ED.kid},
    ],
    ids=["rsa-oaep", "dir", "jws-header"],
)
async def test_five_part_jwe_token_is_refused(harness: Harness, header: dict[str, Any]) -> None:
    verifier, cache = await harness.make()
    parts = [
        _b64(json.dumps(header).encode()),
        _b64(b"k" * 32),
        _b64(b"i" * 12),
        _b64(json.dumps(claims()).encode()),
        _b64(b"t" * 16),
    ]
    fetches = cache.fetch_count
    await refused(verifier, ".".join(parts))
    assert cache.fetch_count == fetches


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "....", "a..b", "!!!.???.###", "e30.e30.", "bnVsbA.e30.x"],
)
async def test_malformed_tokens_are_refused(harness: Harness, token: str) -> None:
    verifier, _ = await harness.make()
    await refused(verifier, token)


# -- kid is only ever a lookup key -----------------------------------------------------------


HOSTILE_KIDS = [
    "../../../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "/dev/zero",
    "' OR '1'='1",
    "x'; DROP TABLE users; --",
    "http://evil.example/jwks",
    "ed-1\x00",
    "ed-1 ",
    "ED-1",
    "k" * 257,
    "k" * 100_00,
]


@pytest.mark.parametrize("kid", HOSTILE_KIDS, ids=range(len(HOSTILE_KIDS)))
async def test_hostile_kid_just_fails_lookup(harness: Harness, kid: str) -> None:
    verifier, cache = await harness.make()
    fetches = cache.fetch_count
    await refused(verifier, sign(ED, kid=kid))
    assert cache.fetch_count == fetches  # within the cooldown: no refetch
    assert all(url == JWKS_URL for url in harness.endpoint.urls)


@pytest.mark.parametrize("kid", [123, 1.5, True, ["ed-1"], {"kid": "ed-1"}], ids=str)
async def test_non_string_kid_is_refused(harness: Harness, kid: Any) -> None:
    verifier, _ = await harness.make()
    token = raw_token({"alg": "EdDSA", "kid": kid}, claims(), b"x" * 64)
    await refused(verifier, token)


async def test_flood_of_unknown_kids_fetches_at_most_once_per_cooldown(harness: Harness) -> None:
    verifier, cache = await harness.make()
    assert cache.fetch_count == 1

    tokens = [sign(ED, kid=f"random-{i}") for i in range(200)]
    results = await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, InvalidTokenError) and r.code == "INVALID_TOKEN" for r in results)
    assert cache.fetch_count == 1  # inside the cooldown: nothing fetched

    harness.clock.now += COOLDOWN + 1
    tokens = [sign(ED, kid=f"other-{i}") for i in range(200)]
    results = await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, InvalidTokenError) and r.code == "INVALID_TOKEN" for r in results)
    assert cache.fetch_count == 2  # one shared refetch


async def test_rotated_key_is_accepted_on_first_use_after_cooldown(harness: Harness) -> None:
    verifier, cache = await harness.make()
    new = _key("ed-2", "EdDSA", ed25519.Ed25519PrivateKey.generate())
    harness.endpoint.keys = [*harness.endpoint.keys, new.jwk]
    harness.clock.now += COOLDOWN
    assert (await verifier.verify(sign(new))).sub == "user-123"
    assert cache.fetch_count == 2
    # The old key (still published during the grace period) keeps working, with no fetch.
    assert (await verifier.verify(sign(ED, claims(sub="other")))).sub == "other"
    assert cache.fetch_count == 2


async def test_kid_absent_uses_the_only_key_but_not_one_of_several(harness: Harness) -> None:
    harness.endpoint.keys = [ED.jwk]
    verifier, _ = await harness.make()
    assert (await verifier.verify(sign(ED, kid=None))).sub == "user-123"

    harness.endpoint.keys = [k.jwk for k in PUBLISHED]
    verifier, _ = await harness.make()
    await refused(verifier, sign(ED, kid=None))


# -- issuer and audience ---------------------------------------------------------------------


async def test_wrong_issuer_is_refused_and_log_names_jwt_issuer(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    verifier, _ = await harness.make()
    with (
        caplog.at_level(logging.INFO, logger="taskapi.auth"),
        pytest.raises(InvalidTokenError) as info,
    ):
        await verifier.verify(sign(ED, claims(iss="http://evil.example")))
    assert info.value.code == "INVALID_TOKEN"
    assert "JWT_ISSUER" not in info.value.detail  # the log says which setting, not the response
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("taskapi.auth")]
    assert any("JWT_ISSUER" in m for m in messages), messages
    assert not any("JWT_AUDIENCE" in m for m in messages), messages


async def test_wrong_audience_is_refused_and_log_names_jwt_audience(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    verifier, _ = await harness.make()
    with (
        caplog.at_level(logging.INFO, logger="taskapi.auth"),
        pytest.raises(InvalidTokenError) as info,
    ):
        await verifier.verify(sign(ED, claims(aud="http://other.example")))
    assert info.value.code == "INVALID_TOKEN"
    assert "JWT_AUDIENCE" not in info.value.detail
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("taskapi.auth")]
    assert any("JWT_AUDIENCE" in m for m in messages), messages
    assert not any("JWT_ISSUER" in m for m in messages), messages


@pytest.mark.parametrize("missing", ["iss", "aud"])
async def test_missing_iss_or_aud_is_refused_when_known(harness: Harness, missing: str) -> None:
    verifier, _ = await harness.make()
    await refused(verifier, sign(ED, claims(**{missing: ...})))


@pytest.mark.parametrize(
    ("iss", "aud"),
    [
        (BASE_URL, BASE_URL),
        (f"{BASE_URL}/", BASE_URL),
        ("https://auth.local", "https://auth.local"),
        ("http://auth.local:3000", "http://auth.local:3000"),
        (BASE_URL, "http://auth.local/api/auth"),
    ],
    ids=["default", "trailing-slash", "https", "other-port", "aud-with-path"],
)
async def test_iss_and_aud_default_to_better_auth_base_url(
    harness: Harness, iss: str, aud: str
) -> None:
    verifier, _ = await harness.make()
    token = sign(ED, claims(iss=iss, aud=aud))
    if (iss, aud) == (BASE_URL, BASE_URL):
        assert (await verifier.verify(token)).sub == "user-123"
    else:
        await refused(verifier, token)


async def test_base_url_with_port_is_the_default_issuer(harness: Harness) -> None:
    verifier, _ = await harness.make(jwks_url="http://auth.local:3000/api/auth/jwks")
    ok = sign(ED, claims(iss="http://auth.local:3000", aud="http://auth.local:3000"))
    assert (await verifier.verify(ok)).sub == "user-123"
    await refused(verifier, sign(ED, claims()))  # iss/aud without the port


async def test_jwt_issuer_and_audience_settings_override_the_default(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    verifier, _ = await harness.make(
        jwt_issuer="https://issuer.example", jwt_audience="api://tasks"
    )
    ok = sign(ED, claims(iss="https://issuer.example", aud="api://tasks"))
    assert (await verifier.verify(ok)).sub == "user-123"
    with caplog.at_level(logging.INFO, logger="taskapi.auth"):
        await refused(verifier, sign(ED, claims()))  # the Better Auth default no longer fits
        await refused(verifier, sign(ED, claims(iss="https://issuer.example")))  # aud default
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "JWT_ISSUER" in messages
    assert "JWT_AUDIENCE" in messages


async def test_only_issuer_overridden_audience_keeps_default(harness: Harness) -> None:
    verifier, _ = await harness.make(jwt_issuer="https://issuer.example")
    ok = sign(ED, claims(iss="https://issuer.example", aud=BASE_URL))
    assert (await verifier.verify(ok)).sub == "user-123"
    await refused(verifier, sign(ED, claims(iss="https://issuer.example", aud="api://x")))


# -- registered claims -----------------------------------------------------------------------


async def test_nbf_in_the_future_is_refused(harness: Harness) -> None:
    verifier, _ = await harness.make()
    await refused(verifier, sign(ED, claims(nbf=int(time.time()) + 3600)))


async def test_nbf_in_the_past_is_accepted(harness: Harness) -> None:
    verifier, _ = await harness.make()
    assert (await verifier.verify(sign(ED, claims(nbf=int(time.time()) - 10)))).sub


@pytest.mark.parametrize(
    "exp", [..., None, "soon", "9999999999x"], ids=["missing", "null", "str", "junk"]
)
async def test_missing_or_malformed_exp_is_refused(harness: Harness, exp: Any) -> None:
    verifier, _ = await harness.make()
    await refused(verifier, sign(ED, claims(exp=exp)))


@pytest.mark.parametrize("sub", [..., ""], ids=["missing", "empty"])
async def test_missing_sub_is_missing_sub_claim(harness: Harness, sub: Any) -> None:
    verifier, _ = await harness.make()
    await refused(verifier, sign(ED, claims(sub=sub)), code="MISSING_SUB_CLAIM")


@pytest.mark.parametrize(
    "sub", [None, 123, ["a"], "a\x00b", "line\nbreak", "x" * 256], ids=range(6)
)
async def test_unusable_sub_is_invalid_token(harness: Harness, sub: Any) -> None:
    verifier, _ = await harness.make()
    await refused(verifier, sign(ED, claims(sub=sub)))


@pytest.mark.parametrize(
    "overrides", list(BAD_REGISTERED_CLAIMS.values()), ids=list(BAD_REGISTERED_CLAIMS)
)
@pytest.mark.parametrize("key", [ED, EC, RSA], ids=lambda k: k.alg)
async def test_registered_claims_of_wrong_type_or_range_are_refused(
    harness: Harness, key: SigningKey, overrides: dict[str, Any]
) -> None:
    """exp/nbf/iat must be sane NumericDates and sub must hold a non-space character:
    INVALID_TOKEN, never an OverflowError (a 500) or an acceptance."""
    verifier, _ = await harness.make()
    await refused(verifier, sign(key, claims(**overrides)))


@pytest.mark.parametrize(
    "overrides",
    [{"exp": time.time() + 900.5}, {"exp": MAX_NUMERIC_DATE}, {"nbf": 0, "iat": 0}],
    ids=["fractional-exp", "exp-at-year-9999", "nbf-iat-zero"],
)
async def test_registered_claims_at_their_bounds_are_accepted(
    harness: Harness, overrides: dict[str, Any]
) -> None:
    verifier, _ = await harness.make()
    assert (await verifier.verify(sign(ED, claims(**overrides)))).sub == "user-123"


async def test_expired_token_is_token_expired(harness: Harness) -> None:
    verifier, _ = await harness.make()
    now = int(time.time())
    await refused(verifier, sign(ED, claims(iat=now - 7200, exp=now - 3600)), code="TOKEN_EXPIRED")


async def test_expired_token_with_bad_signature_is_invalid_not_expired(harness: Harness) -> None:
    verifier, _ = await harness.make()
    now = int(time.time())
    token = sign(ATTACKER, claims(exp=now - 3600), kid=ED.kid)
    await refused(verifier, token, code="INVALID_TOKEN")


async def test_token_signed_by_unpublished_key_with_published_kid_is_refused(
    harness: Harness,
) -> None:
    verifier, _ = await harness.make()
    await refused(verifier, sign(ATTACKER, kid=ED.kid))


async def test_tampered_payload_is_refused(harness: Harness) -> None:
    verifier, _ = await harness.make()
    head, _, sig = sign(ED).split(".")
    body = _b64(json.dumps(claims(sub="someone-else")).encode())
    await refused(verifier, f"{head}.{body}.{sig}")


# -- size bound ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["payload", "header"])
async def test_oversize_token_is_refused_without_fetching(harness: Harness, where: str) -> None:
    verifier, cache = await harness.make(start=False)
    padding = "p" * 9000
    token = sign(ED, claims(padding=padding)) if where == "payload" else sign(ED, kid=padding)
    assert len(token) > 8192
    await refused(verifier, token)
    assert cache.fetch_count == 0
    assert harness.endpoint.urls == []


async def test_max_token_bytes_setting_is_honoured(harness: Harness) -> None:
    verifier, cache = await harness.make(start=False, max_token_bytes=1024)
    token = sign(ED, claims(padding="p" * 1200))
    await refused(verifier, token)
    assert cache.fetch_count == 0


# -- the key set unavailable -----------------------------------------------------------------


async def _unavailable(verifier: TokenVerifier, token: str) -> AuthUnavailableError:
    async with asyncio.timeout(5):
        with pytest.raises(AuthUnavailableError) as info:
            await verifier.verify(token)
    error = info.value
    assert error.code == "AUTH_ERROR"
    assert error.status_code == 503
    assert int(error.headers["Retry-After"]) >= 1
    return error


@pytest.mark.parametrize(
    "failure", ["500", "503", "connect-timeout", "connect-error", "not-json", "no-keys"]
)
async def test_no_key_at_all_is_503_auth_error(harness: Harness, failure: str) -> None:
    endpoint = harness.endpoint
    if failure in ("500", "503"):
        endpoint.status = int(failure)
    elif failure == "connect-timeout":
        endpoint.error = httpx.ConnectTimeout("timed out")
    elif failure == "connect-error":
        endpoint.error = httpx.ConnectError("connection refused")
    elif failure == "not-json":
        endpoint.keys = []
        endpoint.status = 200

        async def html(request: httpx.Request) -> httpx.Response:
            endpoint.urls.append(str(request.url))
            return httpx.Response(200, text="<html>login</html>")

        endpoint.handler = html  # type: ignore[method-assign]
    else:
        endpoint.keys = []
    verifier, _ = await harness.make(retry_after_seconds=7)
    error = await _unavailable(verifier, sign(ED))
    assert error.headers["Retry-After"] == "7"
    # Later requests, inside the cooldown, fail the same way without waiting on a fetch.
    await _unavailable(verifier, sign(ED, claims(sub="again")))


async def test_hanging_jwks_endpoint_is_503_within_fetch_timeout(harness: Harness) -> None:
    harness.endpoint.hang = True
    verifier, _ = await harness.make(fetch_timeout=0.5, start=False)
    started = time.monotonic()
    await _unavailable(verifier, sign(ED))
    assert time.monotonic() - started < 3


async def test_cached_keys_keep_working_while_endpoint_is_down(harness: Harness) -> None:
    verifier, cache = await harness.make()
    harness.endpoint.status = 503
    harness.clock.now += 1000  # past the TTL and the cooldown: refreshes are attempted and fail
    unknown = sign(ED, kid="unknown-kid")
    await refused(verifier, unknown)  # keys are cached: 401, not 503
    assert cache.fetch_count >= 2
    assert (await verifier.verify(sign(ED, claims(sub="still-works")))).sub == "still-works"
    assert (await verifier.verify(sign(RSA, claims(sub="rsa-too")))).sub == "rsa-too"
    assert ED.kid in cache.kids


async def test_key_set_recovers_after_outage(harness: Harness) -> None:
    harness.endpoint.status = 500
    verifier, _ = await harness.make()
    await _unavailable(verifier, sign(ED))
    harness.endpoint.status = 200
    harness.clock.now += COOLDOWN
    assert (await verifier.verify(sign(ED, claims(sub="back")))).sub == "back"


# -- over HTTP -------------------------------------------------------------------------------


class TestOverHTTP:
    """The service answering with the JWKS endpoint on a closed port."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {
            "jwks_url": "http://127.0.0.1:9/api/auth/jwks",
            "jwks_fetch_timeout_seconds": 0.5,
            "retry_after_seconds": 3,
        }

    async def test_unreachable_jwks_is_503_auth_error_with_retry_after(
        self, client: httpx.AsyncClient
    ) -> None:
        token = sign(ED, claims(iss="http://127.0.0.1:9", aud="http://127.0.0.1:9"))
        started = time.monotonic()
        async with asyncio.timeout(10):
            response = await client.get(
                "/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}
            )
        assert time.monotonic() - started < 5
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "AUTH_ERROR"
        assert response.headers["Retry-After"] == "3"

    async def test_invalid_token_is_still_401_while_jwks_is_unreachable(
        self, client: httpx.AsyncClient
    ) -> None:
        for token in (
            raw_token({"alg": "none"}, claims()),
            hs256_with(RSA.public_pem, {"alg": "HS256", "kid": RSA.kid}, claims()),
            sign(ED, jku="http://evil.example/jwks"),
        ):
            response = await client.get(
                "/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 401, response.text
            assert response.json()["code"] == "INVALID_TOKEN"

    async def test_hs256_shared_secret_still_works_alongside_jwks(
        self, client: httpx.AsyncClient
    ) -> None:
        token = jwt.encode(claims(iss=..., aud=...), TEST_SECRET, algorithm="HS256")
        response = await client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text


class TestRefusalsDoNotWaitForTheDatabase:
    """A refused token is refused by the verifier alone: no database connection is needed.

    With the connection pool exhausted (one connection, held by the test), every refusal
    must still be its own answer (401 INVALID_TOKEN, or 503 AUTH_ERROR with no key at all),
    promptly, rather than a wait for the pool followed by 503 SERVICE_UNAVAILABLE.
    """

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {
            "jwks_url": "http://127.0.0.1:9/api/auth/jwks",
            "jwks_fetch_timeout_seconds": 0.5,
            "db_pool_size": 1,
            "db_max_overflow": 0,
            "db_pool_timeout_seconds": 3.0,
        }

    async def test_refusals_with_the_pool_exhausted(
        self, client: httpx.AsyncClient, app: Any
    ) -> None:
        cases = {
            "alg-none": (raw_token({"alg": "none"}, claims()), 401, "INVALID_TOKEN"),
            "hs256-public-key": (
                hs256_with(RSA.public_pem, {"alg": "HS256", "kid": RSA.kid}, claims()),
                401,
                "INVALID_TOKEN",
            ),
            "jku": (sign(ED, jku="http://evil.example/jwks"), 401, "INVALID_TOKEN"),
            "five-part": ("a.b.c.d.e", 401, "INVALID_TOKEN"),
            "oversize": (sign(ED, claims(padding="p" * 9000)), 401, "INVALID_TOKEN"),
            "no-key-at-all": (sign(ED), 503, "AUTH_ERROR"),
        }
        async with app.state.engine.connect():  # the only connection of the pool
            for name, (token, status, code) in cases.items():
                started = time.monotonic()
                response = await client.get(
                    "/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}
                )
                elapsed = time.monotonic() - started
                assert (response.status_code, response.json()["code"]) == (status, code), (
                    name,
                    response.text,
                )
                assert elapsed < 2.5, (name, elapsed)
