"""What the service purges by itself: deletions older than the change feed keeps, and
idempotency keys past their time. No job for the operator to run: every instance runs
`purge_forever` in its lifespan (the deletes are idempotent, so instances may overlap)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from taskapi.db import Database, Query, Row, UnitOfWork
from taskapi.tasks import queries
from taskapi.tasks.operations import SyncPolicy

logger = logging.getLogger("taskapi.tasks")


async def purge_expired(database: Database, policy: SyncPolicy, now: datetime) -> int:
    """Delete what expired before `now`, a batch per transaction; the number deleted."""
    total = 0
    for query, cutoff in (
        (queries.PURGE_TOMBSTONES, now - policy.tombstone_retention),
        (queries.PURGE_KEYS, now - policy.idempotency_ttl),
    ):
        total += await _purge(database, query, cutoff)
    return total


async def _purge(database: Database, query: Query[Row], cutoff: datetime) -> int:
    purged = 0
    while True:
        async with UnitOfWork(database) as work:
            batch = len(await work.fetch_all(query, {"cutoff": cutoff}))
        purged += batch
        if batch < queries.PURGE_BATCH:
            return purged


async def purge_forever(database: Database, policy: SyncPolicy, interval: float) -> None:
    """`purge_expired` now and every `interval` seconds, until cancelled; a failure is
    logged and tried again next time."""
    while True:
        try:
            purged = await purge_expired(database, policy, datetime.now(UTC))
            if purged:
                logger.info("purged %d expired tombstones and idempotency keys", purged)
        except Exception as error:
            logger.warning("purge failed (%s); trying again later", type(error).__name__)
        await asyncio.sleep(interval)
