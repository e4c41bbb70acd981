"""What the service's parts report as it happens, for metrics: one method per kind of event.

The parts that see an event (rate limits, the JWKS cache, the sync operations) take an
`Events` and call it;
`taskapi.metrics.Metrics` counts each; `NO_EVENTS` ignores them when metrics are off. A new
kind of event is a method here, one in `NoEvents`, and a counter in `Metrics`.
"""

from __future__ import annotations

from typing import Literal, Protocol

JWKSOutcome = Literal["success", "failure"]
FeedOutcome = Literal["full", "changes", "unchanged", "expired"]
"""A change-feed request's answer: every task (no sync token: a first sync), changes since
the token, nothing new since it, or 410 (the token is older than the feed keeps deletions)."""
FEED_OUTCOMES: tuple[FeedOutcome, ...] = ("full", "changes", "unchanged", "expired")


class Events(Protocol):
    def rate_limited(self, policy: str) -> None:
        """A request was refused by the rate limit `policy` (its name: user or anonymous)."""

    def jwks_fetched(self, outcome: JWKSOutcome) -> None:
        """A fetch of the JWKS ended."""

    def idempotency_replayed(self) -> None:
        """A create with an `Idempotency-Key` was answered with the key's stored answer."""

    def feed_requested(self, outcome: FeedOutcome) -> None:
        """The change feed answered a request (or refused an expired sync token)."""


class NoEvents:
    """Events nobody counts."""

    def rate_limited(self, policy: str) -> None:
        return None

    def jwks_fetched(self, outcome: JWKSOutcome) -> None:
        return None

    def idempotency_replayed(self) -> None:
        return None

    def feed_requested(self, outcome: FeedOutcome) -> None:
        return None


NO_EVENTS: Events = NoEvents()
