"""Bearer-token verification: HS256 with the shared secret, or Better Auth's JWKS keys."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import jwt

from taskapi.auth.jwks import JWKSCache, JWKSKeyNotFoundError, JWKSUnavailableError
from taskapi.config import HMAC_ALGORITHMS, Settings
from taskapi.errors import (
    AuthUnavailableError,
    InvalidTokenError,
    MissingSubClaimError,
    TokenExpiredError,
)
from taskapi.models import AVATAR_URL_MAX, EMAIL_MAX, NAME_MAX, USER_ID_MAX, unstorable_reason
from taskapi.users.service import Profile

logger = logging.getLogger("taskapi.auth")

# Header parameters that would let a token choose its own key: never honoured.
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"})
# Which key type (and curve) each asymmetric algorithm may be used with.
# RFC 7519's NumericDate claims, honoured by this module rather than by PyJWT, whose checks
# take `int(value)`: a string of digits, a boolean or 10**400 would pass them.
_TIME_CLAIMS = ("exp", "nbf", "iat")
# A NumericDate must be a JSON number within what a datetime can hold: 1970 to 9999.
MAX_NUMERIC_DATE = 253_402_300_799.0  # 9999-12-31T23:59:59Z
_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "EdDSA": ("OKP", "Ed25519"),
    "ES256": ("EC", "P-256"),
    "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for, and the profile claims it carries."""

    sub: str
    email: str | None
    name: str | None
    avatar_url: str | None
    expires_at: float

    @property
    def profile(self) -> Profile:
        return Profile(self.email, self.name, self.avatar_url)


def _clean_text(value: Any, limit: int) -> str | None:
    """A profile claim fit to store: a non-empty string within `limit`; else None."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    return None if unstorable_reason(value) else value


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """Build the identity from verified claims; `sub` must be a usable user id."""
    sub = claims.get("sub")
    if sub is None or sub == "":
        raise MissingSubClaimError()
    if _clean_text(sub, USER_ID_MAX) is None or not sub.isprintable() or sub.isspace():
        raise InvalidTokenError("Token 'sub' claim is not a valid user id")
    exp = claims["exp"]  # a number within MAX_NUMERIC_DATE: `check_times` ran first
    return Identity(
        sub=sub,
        email=_clean_text(claims.get("email"), EMAIL_MAX),
        name=_clean_text(claims.get("name"), NAME_MAX),
        avatar_url=_clean_text(claims.get("image") or claims.get("picture"), AVATAR_URL_MAX),
        expires_at=float(exp),
    )


def numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """The claim `name` as a NumericDate, None if absent; INVALID_TOKEN unless it is a JSON
    number (not a boolean), finite and within 0..MAX_NUMERIC_DATE."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTokenError(f"Token {name!r} claim is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidTokenError(f"Token {name!r} claim is not a finite number")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise InvalidTokenError(f"Token {name!r} claim is out of range")
    return float(value)


def check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    """`exp` (required), `nbf` and `iat`: sane NumericDates, and valid at `now` +- leeway.

    A claim of the wrong type or out of range is INVALID_TOKEN; only a well-formed `exp` in
    the past is TOKEN_EXPIRED.
    """
    exp, nbf, iat = (numeric_date(claims, name) for name in _TIME_CLAIMS)
    if exp is None:
        raise InvalidTokenError("Token has no 'exp' claim")
    if iat is not None and iat > now + leeway:
        raise InvalidTokenError("Token was issued in the future (iat)")
    if nbf is not None and nbf > now + leeway:
        raise InvalidTokenError("Token is not yet valid (nbf)")
    if exp <= now - leeway:
        raise TokenExpiredError()


class TokenVerifier:
    """Verifies tokens and remembers verified ones until they expire (bounded)."""

    def __init__(self, settings: Settings, jwks: JWKSCache | None = None) -> None:
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._hmac_algorithm = settings.jwt_algorithm
        self._asymmetric = frozenset(settings.jwt_algorithms) if jwks is not None else frozenset()
        self._jwks = jwks
        self._leeway = settings.jwt_leeway_seconds
        self._max_bytes = settings.max_token_bytes
        self._hmac_issuer = settings.jwt_issuer
        self._hmac_audience = settings.jwt_audience
        self._jwks_issuer = settings.expected_issuer
        self._jwks_audience = settings.expected_audience
        self._retry_after = settings.retry_after_seconds
        self._cache: dict[str, Identity] = {}
        self._cache_size = settings.token_cache_size

    async def verify(self, token: str) -> Identity:
        """The identity of a valid token; raises a 401 (or 503 `AUTH_ERROR`) otherwise."""
        cached = self._cache.get(token)
        if cached is not None:
            if time.time() < cached.expires_at + self._leeway:
                return cached
            del self._cache[token]
        identity = await self._verify_uncached(token)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                # Evict the oldest entry (dicts keep insertion order).
                del self._cache[next(iter(self._cache))]
            self._cache[token] = identity
        return identity

    async def _verify_uncached(self, token: str) -> Identity:
        if len(token) > self._max_bytes:
            raise InvalidTokenError("Token is too large")
        if token.count(".") != 2:
            raise InvalidTokenError("Token is not a signed JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidTokenError() from None
        alg = header.get("alg")
        if not isinstance(alg, str) or _FORBIDDEN_HEADERS.intersection(header):
            raise InvalidTokenError()
        if alg in HMAC_ALGORITHMS:
            if self._secret is None or alg != self._hmac_algorithm:
                raise InvalidTokenError()
            claims = self._decode(token, self._secret, alg, self._hmac_issuer, self._hmac_audience)
        elif alg in self._asymmetric:
            key = await self._public_key(header.get("kid"), alg)
            claims = self._decode(token, key, alg, self._jwks_issuer, self._jwks_audience)
        else:
            raise InvalidTokenError()  # includes "none" and anything not allow-listed
        return identity_from_claims(claims)

    async def _public_key(self, kid: Any, alg: str) -> Any:
        """The JWKS key named by `kid`, only if its type fits `alg`."""
        assert self._jwks is not None
        if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
            raise InvalidTokenError()
        try:
            jwk = await self._jwks.get_key(kid)
        except JWKSKeyNotFoundError:
            raise InvalidTokenError() from None
        except JWKSUnavailableError:
            logger.warning("no JWKS key available; check JWKS_URL is reachable")
            raise AuthUnavailableError(retry_after=self._retry_after) from None
        kty, crv = _KEY_TYPES[alg]
        declared = jwk._jwk_data.get("alg")
        if (
            jwk.key_type != kty
            or (crv is not None and jwk._jwk_data.get("crv") != crv)
            or (declared is not None and declared != alg)
        ):
            raise InvalidTokenError()
        return jwk.key

    def _decode(
        self, token: str, key: Any, alg: str, issuer: str | None, audience: str | None
    ) -> dict[str, Any]:
        # PyJWT checks the signature, then iss and aud; `check_times` the time claims.
        options: dict[str, Any] = {
            "require": ["exp"],
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": audience is not None,
            "verify_iss": issuer is not None,
        }
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                options=options,  # type: ignore[arg-type]
                audience=audience,
                issuer=issuer,
                leeway=self._leeway,
            )
        except jwt.InvalidIssuerError:
            logger.warning(
                "token refused: its 'iss' is not %r; set JWT_ISSUER to the issuer your "
                "Better Auth server puts in tokens (its base URL by default)",
                issuer,
            )
            raise InvalidTokenError() from None
        except jwt.InvalidAudienceError:
            logger.warning(
                "token refused: its 'aud' does not contain %r; set JWT_AUDIENCE to the audience "
                "your Better Auth server puts in tokens (its base URL by default)",
                audience,
            )
            raise InvalidTokenError() from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidTokenError() from None
        check_times(claims, time.time(), self._leeway)
        return claims
