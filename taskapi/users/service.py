"""Users are provisioned from verified tokens: created on first sight, profile kept current."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql, sqlite

from taskapi.db import Query, UnitOfWork
from taskapi.models import users


class Profile(NamedTuple):
    """What a token says of its user, as stored on the user's row."""

    email: str | None
    name: str | None
    avatar_url: str | None


def _upsert(insert: Any) -> Any:
    """INSERT .. ON CONFLICT (id) DO UPDATE, touching the row only if the profile changed."""
    statement = insert(users).values(
        {
            name: bindparam(name)
            for name in ("id", "email", "name", "avatar_url", "created_at", "updated_at")
        }
    )
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[users.c.id],
        set_={
            "email": new.email,
            "name": new.name,
            "avatar_url": new.avatar_url,
            "updated_at": new.updated_at,
        },
        where=(
            users.c.email.is_distinct_from(new.email)
            | users.c.name.is_distinct_from(new.name)
            | users.c.avatar_url.is_distinct_from(new.avatar_url)
        ),
    ).returning(users.c.id)


# SQLite's statement runs through SQLAlchemy; PostgreSQL's is compiled once for asyncpg.
UPSERT_USER = Query.of(_upsert(sqlite.insert), postgres=_upsert(postgresql.insert))


class UserProvisioner:
    """Get-or-create users by `sub`; remembers (bounded) which profiles are already stored.

    Concurrent first requests of one user are safe: the upsert never fails on the
    primary key, so all of them succeed and one row results.
    """

    def __init__(self, cache_size: int) -> None:
        self._known: dict[str, Profile] = {}
        self._cache_size = cache_size

    async def ensure(self, work: UnitOfWork, sub: str, profile: Profile) -> None:
        """Make sure the user's row exists with the token's profile."""
        if self._known.get(sub) == profile:
            return
        now = datetime.now(UTC)
        await work.fetch_one(
            UPSERT_USER,
            {
                "id": sub,
                "email": profile.email,
                "name": profile.name,
                "avatar_url": profile.avatar_url,
                "created_at": now,
                "updated_at": now,
            },
        )
        work.after_commit(lambda: self._remember(sub, profile))

    def forget(self, sub: str) -> None:
        """The user's row was deleted: provision it again on their next request."""
        self._known.pop(sub, None)

    def _remember(self, sub: str, profile: Profile) -> None:
        if not self._cache_size:
            return
        if sub not in self._known and len(self._known) >= self._cache_size:
            del self._known[next(iter(self._known))]
        self._known[sub] = profile
