"""The `CurrentUser` dependency: parse the Bearer header, verify, provision."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request

from taskapi.auth.tokens import Identity, TokenVerifier
from taskapi.db import get_session
from taskapi.errors import (
    AuthenticationError,
    InvalidAuthHeaderError,
    MissingTokenError,
    RateLimitedError,
)
from taskapi.ratelimit import RateLimits
from taskapi.requestctx import RESPONSE_HEADERS_KEY, request_id
from taskapi.users.service import UserProvisioner

logger = logging.getLogger("taskapi.auth")


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    if authorization is None:
        raise MissingTokenError()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token or " " in token.strip() or not token.strip():
        raise InvalidAuthHeaderError()
    return token.strip()


async def authenticate_bearer(
    verifier: TokenVerifier,
    limits: RateLimits | None,
    authorization: str | None,
    client: str,
    path: str,
    response_headers: list[tuple[bytes, bytes]] | None,
) -> Identity:
    """Verify an Authorization header's token and charge its rate limit.

    Failures are logged with their code, never the token, and count against the
    client address, so an unauthenticated flood is limited too. The rate-limit headers
    go to `response_headers` (the edge middleware adds them to whatever is answered).
    """
    try:
        identity = await verifier.verify(bearer_token(authorization))
    except AuthenticationError as error:
        logger.info(
            "authentication failed code=%s request_id=%s path=%s",
            error.code,
            request_id(),
            path,
        )
        if limits is not None:
            decision = await limits.charge_anonymous(client)
            if not decision.allowed:
                raise RateLimitedError(headers=decision.headers(limits.anonymous)) from None
        raise
    if limits is not None:
        decision = await limits.charge_user(identity.sub)
        if not decision.allowed:
            raise RateLimitedError(headers=decision.headers(limits.user))
        if response_headers is not None:
            response_headers += decision.raw_headers(limits.user)
    return identity


async def authenticate(request: Request) -> Identity:
    """`authenticate_bearer` for a FastAPI request."""
    services = request.app.services
    return await authenticate_bearer(
        services.verifier,
        services.rate_limits,
        request.headers.get("authorization"),
        request.client.host if request.client else "unknown",
        request.url.path,
        request.scope.get(RESPONSE_HEADERS_KEY),
    )


async def current_user(request: Request) -> Identity:
    """The authenticated user, provisioned in the database on first sight.

    One dependency rather than a chain: each dependency FastAPI resolves costs time on
    every request.
    """
    identity = await authenticate(request)
    provisioner: UserProvisioner = request.app.services.provisioner
    await provisioner.ensure(await get_session(request), identity)
    return identity


CurrentUser = Annotated[Identity, Depends(current_user)]
