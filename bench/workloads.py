"""The service's workloads (bench/lua/<workload>.lua), one wrk run each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.database import settle
from bench.processes import check_quiet
from bench.servers import Server
from bench.wrk import WrkResult, sweep, warm_then_measure, wrk

# The sync clients' workloads (conditional, poll) come before any write: their ETags and
# sync tokens are those of the seeded state (bench/seeding.py, write_sync_clients).
SYNC_WORKLOADS = ("conditional", "poll")
# The cold workloads (tokens not seen, new users: bench/seeding.py, write_cold_tokens) come
# last: each of their tokens once, then no more seen than any other.
COLD_WORKLOADS = ("cold_token", "new_user")
# The screens of a task app (issue 13), one request each: read-only, before any write.
SCREEN_WORKLOADS = ("screen_list", "screen_due", "screen_overdue", "screen_label", "screen_search")
WORKLOADS = [
    "get_by_id",
    "conditional",
    "browser",
    "poll",
    "list",
    *SCREEN_WORKLOADS,
    "create",
    "update",
    "mix",
    *COLD_WORKLOADS,
]


def run_workloads(
    server: Server,
    data: Path,
    dur: float,
    db: str,
    label_prefix: str = "",
    only: tuple[str, ...] = (),
    sync_clients: Callable[[], None] | None = None,
    cold_tokens: Callable[[], None] | None = None,
) -> list[WrkResult]:
    """Each workload (or those in `only`) once, each from a settled database (`db`, its URL);
    `sync_clients` (re)writes the sync clients' state just before the first sync workload
    (after the warm-up's writes, so that their ETags are the current ones); `cold_tokens`
    writes fresh never-seen tokens before each cold workload, which is measured without a
    warm-up of its own (that would spend them) after a GET warm-up."""
    check_quiet(f"before {server.name} workloads")
    wrk("warmup", server.url, "get_by_id", data, 3, quiet=True)
    wrk("warmup", server.url, "mix", data, 2, quiet=True)
    rows = []
    for w in only or WORKLOADS:
        if w in SYNC_WORKLOADS and sync_clients is not None:
            sync_clients()
            sync_clients = None
        settle(db)
        if w in COLD_WORKLOADS:
            if cold_tokens is None:
                continue
            cold_tokens()
            wrk("warmup", server.url, "get_by_id", data, 2, quiet=True)
            rows.append(wrk(f"{label_prefix}{w}", server.url, w, data, dur))
            continue
        # the warm-up runs past the checkpoint
        rows.append(warm_then_measure(f"{label_prefix}{w}", server.url, w, data, dur))
    return rows


def sweep_service(service: Server, qy: Server, data: Path, dur: float) -> list[WrkResult]:
    """GET by id and the mix at each connection count, the one-query ceiling for reference."""
    targets = [
        ("one-query ceiling", qy.url, "get_by_id"),
        ("get_by_id", service.url, "get_by_id"),
        ("mix", service.url, "mix"),
    ]
    return sweep(targets, data, dur)
