"""What the service's parts report as it happens, for metrics: one method per kind of event.

The parts that see an event (rate limits, the JWKS cache) take an `Events` and call it;
`taskapi.metrics.Metrics` counts each; `NO_EVENTS` ignores them when metrics are off. A new
kind of event is a method here, one in `NoEvents`, and a counter in `Metrics`.
"""

from __future__ import annotations

from typing import Literal, Protocol

JWKSOutcome = Literal["success", "failure"]


class Events(Protocol):
    def rate_limited(self, policy: str) -> None:
        """A request was refused by the rate limit `policy` (its name: user or anonymous)."""

    def jwks_fetched(self, outcome: JWKSOutcome) -> None:
        """A fetch of the JWKS ended."""


class NoEvents:
    """Events nobody counts."""

    def rate_limited(self, policy: str) -> None:
        return None

    def jwks_fetched(self, outcome: JWKSOutcome) -> None:
        return None


NO_EVENTS: Events = NoEvents()
