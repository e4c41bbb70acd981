"""What the lifespan builds and every request uses, in one typed place: `app.services`."""

from __future__ import annotations

from dataclasses import dataclass

from taskapi.auth.tokens import TokenVerifier
from taskapi.config import Settings
from taskapi.db import Database
from taskapi.ratelimit import RateLimits
from taskapi.users.service import UserProvisioner


@dataclass(frozen=True, slots=True)
class Services:
    """The running service's parts, set on the app for the length of its lifespan.

    An ordinary attribute of the app rather than entries of Starlette's `app.state`: a read
    of `app.state.x` first fails the normal attribute lookup (an AttributeError raised and
    caught inside `State.__getattr__`), about 0.4 µs each, several per request.
    """

    settings: Settings
    db: Database
    verifier: TokenVerifier
    provisioner: UserProvisioner
    rate_limits: RateLimits | None
