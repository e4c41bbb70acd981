"""The runner's options: parsed once from the command line into a frozen dataclass."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import bench
from bench.core import ROOT


@dataclass(frozen=True)
class Options:
    """Every setting of one run, with the --quick defaults already resolved."""

    sweep: bool
    scale: bool
    soak: int  # seconds of the soak's mix run; 0 = no soak
    profile: bool
    prod: bool
    prod_cmd: str | None
    ceilings_only: bool
    app: str
    duration: float  # seconds per wrk run
    users: int
    tasks_per_user: int
    seed_seconds: float
    pool_size: int
    db: str
    pg_url: str
    env: tuple[tuple[str, str], ...]  # extra environment of the service instances
    scale_tasks: int
    page_limit: int
    deep_seconds: float
    rss_interval: float
    repeat: int
    db_latency_ms: float  # added each way between the servers and PostgreSQL (0: none)
    pooler: bool  # the servers reach PostgreSQL through PgBouncer in transaction mode
    pooler_pool_size: int
    workloads: tuple[str, ...] = ()  # the service's workloads to run (empty: all)
    server_pg_url: str = ""  # where the servers connect (set by the runner: bench/dbpath.py)

    def database_url(self, db: str) -> str:
        """The runner's own way to database `db`: straight to PostgreSQL."""
        return f"{self.pg_url.rstrip('/')}/{db}"

    def server_database_url(self, db: str) -> str:
        """The servers' way to database `db`: the run's path (latency, pooler) if any."""
        return f"{(self.server_pg_url or self.pg_url).rstrip('/')}/{db}"


def _service_pool_size() -> int:
    """The service's default DB_POOL_SIZE: the ceilings get the same pool."""
    sys.path.insert(0, str(ROOT))
    from taskapi.config import Settings

    default = Settings.model_fields["db_pool_size"].default
    assert isinstance(default, int)
    return default


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short runs, small seed (smoke test)")
    ap.add_argument(
        "--sweep", action="store_true", help="connections 8/32/128/512 for get_by_id and mix"
    )
    ap.add_argument("--scale", action="store_true", help="10k vs 10M tasks, deep pagination")
    ap.add_argument(
        "--soak", type=int, default=0, metavar="SECONDS", help="long mix run with RSS sampling"
    )
    ap.add_argument("--profile", action="store_true", help="py-spy during a mix run")
    ap.add_argument(
        "--prod", action="store_true", help="also run workloads against the production command"
    )
    ap.add_argument(
        "--prod-cmd",
        default=None,
        help="production command, {port} substituted (default: uvicorn main:app "
        "--workers 2 with the same flags)",
    )
    ap.add_argument("--ceilings-only", action="store_true", help="measure only the two ceilings")
    ap.add_argument("--app", default="main:app", help="ASGI app of the service (default main:app)")
    ap.add_argument(
        "--duration", type=float, default=None, help="seconds per wrk run (default 15, quick 5)"
    )
    ap.add_argument(
        "--users", type=int, default=None, help="seeded users (default 1000, quick 200)"
    )
    ap.add_argument("--tasks-per-user", type=int, default=None, help="default 20, quick 10")
    ap.add_argument(
        "--seed-seconds", type=float, default=300, help="upper bound on API seeding time"
    )
    ap.add_argument(
        "--pool-size",
        type=int,
        default=_service_pool_size(),
        help="the ceilings' pool size (default: the service's default DB_POOL_SIZE)",
    )
    ap.add_argument("--db", default="taskapi_bench", help="bench database (dropped and recreated)")
    ap.add_argument(
        "--pg-url", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    )
    ap.add_argument(
        "--env",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="extra env for the service instances (repeatable)",
    )
    # Accepted so that older command lines still run: the schema always comes from the
    # service's migrations (the bench-only fallback schema predates them and is gone).
    ap.add_argument("--allow-fallback-schema", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scale-tasks", type=int, default=10_000_000)
    ap.add_argument("--page-limit", type=int, default=100, help="page size for deep pagination")
    ap.add_argument(
        "--deep-seconds", type=float, default=120, help="bound on the deep pagination walk"
    )
    ap.add_argument(
        "--db-latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="a proxy adding MS milliseconds each way between every server and PostgreSQL",
    )
    ap.add_argument(
        "--pooler",
        action="store_true",
        help="every server reaches PostgreSQL through PgBouncer in transaction mode",
    )
    ap.add_argument(
        "--pooler-pool-size",
        type=int,
        default=40,
        help="PgBouncer's server connections to PostgreSQL (default 40: above any pool the "
        "run uses, within a shared server's max_connections)",
    )
    ap.add_argument(
        "--workloads",
        default="",
        help="comma-separated subset of the service's workloads (default: all)",
    )
    ap.add_argument("--rss-interval", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=2, help="--scale: best of N runs per measurement")
    return ap


def parse_options(argv: Sequence[str] | None = None) -> Options:
    ns = _parser().parse_args(argv)
    return Options(
        sweep=ns.sweep,
        scale=ns.scale,
        soak=ns.soak,
        profile=ns.profile,
        prod=ns.prod,
        prod_cmd=ns.prod_cmd,
        ceilings_only=ns.ceilings_only,
        app=ns.app,
        duration=ns.duration or (5 if ns.quick else 15),
        users=ns.users or (200 if ns.quick else 1000),
        tasks_per_user=ns.tasks_per_user or (10 if ns.quick else 20),
        seed_seconds=ns.seed_seconds,
        pool_size=ns.pool_size,
        db=ns.db,
        pg_url=ns.pg_url,
        env=tuple(ns.env),
        scale_tasks=ns.scale_tasks,
        page_limit=ns.page_limit,
        deep_seconds=ns.deep_seconds,
        rss_interval=ns.rss_interval,
        repeat=ns.repeat,
        db_latency_ms=ns.db_latency,
        pooler=ns.pooler,
        pooler_pool_size=ns.pooler_pool_size,
        workloads=tuple(w for w in ns.workloads.split(",") if w),
    )
