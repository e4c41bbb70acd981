"""Who is asking: one call that authenticates a request, charges its rate limit and
provisions its user, for both request paths; and `CurrentUser`, its FastAPI dependency."""

from __future__ import annotations

import logging
from typing import Annotated, NamedTuple

from fastapi import Depends, Request
from starlette.types import Scope

from taskapi.auth.tokens import Identity, TokenVerifier
from taskapi.db import UnitOfWork, get_session
from taskapi.errors import (
    AuthenticationError,
    InvalidAuthHeaderError,
    MissingTokenError,
    RateLimitedError,
)
from taskapi.ratelimit import RateLimits
from taskapi.requestctx import (
    CHARGE_KEY,
    EXCHANGE_KEY,
    RESPONSE_HEADERS_KEY,
    Charge,
    Exchange,
)
from taskapi.users.service import UserProvisioner

logger = logging.getLogger("taskapi.auth")


class RequestContext(NamedTuple):
    """What authentication reads of a request."""

    authorization: str | None
    """The first `Authorization` header, as Starlette reads it."""
    client: str
    """The client address: failed authentications are charged to it."""
    response_headers: list[tuple[bytes, bytes]] | None
    """Where the rate-limit headers go (the edge adds them to whatever is answered)."""
    charge: Charge | None
    """Marked once the request is charged, so the edge does not charge it again."""
    exchange: Exchange | None
    """Where the verified user is noted for the access log and metrics (when either is on)."""

    @staticmethod
    def of(scope: Scope) -> RequestContext:
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        client = scope.get("client")
        return RequestContext(
            authorization,
            client[0] if client else "unknown",
            scope.get(RESPONSE_HEADERS_KEY),
            scope.get(CHARGE_KEY),
            scope.get(EXCHANGE_KEY),
        )


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    if authorization is None:
        raise MissingTokenError()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token or " " in token.strip() or not token.strip():
        raise InvalidAuthHeaderError()
    return token.strip()


class Authenticator:
    """Token verification, the rate limits and user provisioning, applied in that order."""

    __slots__ = ("_limits", "_provisioner", "_verifier")

    def __init__(
        self, verifier: TokenVerifier, limits: RateLimits | None, provisioner: UserProvisioner
    ) -> None:
        self._verifier = verifier
        self._limits = limits
        self._provisioner = provisioner

    @property
    def provisioner(self) -> UserProvisioner:
        """The user provisioner (`DELETE /api/v1/me` makes it forget a deleted user)."""
        return self._provisioner

    async def authenticate(self, context: RequestContext, work: UnitOfWork) -> Identity:
        """The request's verified identity, charged to its rate limit and provisioned in
        `work`.

        A failure is logged with its code (and, as every log line, the request id), never
        the token or the raw path, and is charged to the client address, so an
        unauthenticated flood is limited too. A verified user is named in the access log.
        """
        limits = self._limits
        if context.charge is not None:  # settled here, limited or not: the edge leaves it be
            context.charge.done = True
        try:
            identity = await self._verifier.verify(bearer_token(context.authorization))
        except AuthenticationError as error:
            logger.info("authentication failed code=%s", error.code)
            if limits is not None:
                decision = await limits.charge_anonymous(context.client)
                if not decision.allowed:
                    raise RateLimitedError(headers=decision.headers(limits.anonymous)) from None
            raise
        if context.exchange is not None:
            context.exchange.user_id = identity.sub
        if limits is not None:
            decision = await limits.charge_user(identity.sub)
            if not decision.allowed:
                raise RateLimitedError(headers=decision.headers(limits.user))
            if context.response_headers is not None:
                context.response_headers.extend(decision.raw_headers(limits.user))
        await self._provisioner.ensure(work, identity.sub, identity.profile)
        return identity

    async def charge_address(self, client: str) -> RateLimitedError | None:
        """Charge a request that never reached authentication to its client address: the
        refusal to answer instead, if the address is over its limit."""
        limits = self._limits
        if limits is None:
            return None
        decision = await limits.charge_anonymous(client)
        if decision.allowed:
            return None
        return RateLimitedError(headers=decision.headers(limits.anonymous))


async def current_user(request: Request) -> Identity:
    """The authenticated, provisioned user of a FastAPI request (one dependency rather than
    a chain: each dependency FastAPI resolves costs time on every request)."""
    authenticator: Authenticator = request.app.services.authenticator
    work = await get_session(request)
    return await authenticator.authenticate(RequestContext.of(request.scope), work)


CurrentUser = Annotated[Identity, Depends(current_user)]
