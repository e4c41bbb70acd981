"""`python -m taskapi.devtoken SUB`: print an HS256 token for local use (not in production)."""

from __future__ import annotations

import argparse
import sys
import time

import jwt

from taskapi.config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    """Print a token signed with JWT_SECRET for `sub`, valid for `--hours`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sub", help="user id (the token's sub claim)")
    parser.add_argument("--email", default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--hours", type=float, default=12.0)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"devtoken: {error}", file=sys.stderr)
        return 2
    if settings.is_production:
        print(
            "devtoken: refused: ENVIRONMENT is production; tokens come from Better Auth there.",
            file=sys.stderr,
        )
        return 1
    if settings.jwt_secret is None:
        if settings.jwks_url is not None:
            hint = "(JWKS-only mode): sign in through Better Auth for a token."
        else:
            hint = "(nor JWKS_URL): `make run` writes a random development JWT_SECRET into .env."
        print(f"devtoken: JWT_SECRET is not set {hint}", file=sys.stderr)
        return 1
    now = int(time.time())
    claims = {"sub": args.sub, "iat": now, "exp": now + int(args.hours * 3600)}
    claims["email"] = args.email or f"{args.sub}@example.com"
    claims["name"] = args.name or args.sub
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    print(
        jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithm)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
