"""What the lifespan builds and every request uses, in one typed place: `app.services`."""

from __future__ import annotations

from dataclasses import dataclass

from taskapi.auth.dependencies import Authenticator
from taskapi.config import Settings
from taskapi.db import Database
from taskapi.tasks.operations import SyncPolicy


@dataclass(frozen=True, slots=True)
class Services:
    """The running service's parts, set on the app for the length of its lifespan.

    An ordinary attribute of the app rather than entries of Starlette's `app.state`, whose
    every read first fails the normal attribute lookup (see docs/design.md).
    """

    settings: Settings
    db: Database
    authenticator: Authenticator
    sync: SyncPolicy
