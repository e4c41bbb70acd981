"""The run: which phases, in which order, with which servers (`bench/run.py` calls `main`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bench.ceilings import measure_ceilings, measure_floor, run_ceilings_only, start_ceilings
from bench.core import DATA, LOGS, SERVER_FLAGS, log
from bench.database import prepare_db
from bench.dbpath import measure_round_trip, start_path
from bench.options import Options, parse_options
from bench.processes import cleanup, install_cleanup
from bench.profiling import profile, soak
from bench.report import print_against_floor, print_headline, print_table, print_worker_rss
from bench.scale import run_scale
from bench.seeding import seed_via_api, write_cold_tokens, write_sync_clients, write_tokens
from bench.servers import (
    Server,
    metrics_enabled,
    observability,
    server_env,
    start_all,
    uvicorn_command,
)
from bench.workloads import run_workloads, sweep_service
from bench.wrk import WrkResult


def _print_path(opts: Options) -> None:
    """Where the servers' PostgreSQL is, and the round trip measured through that path."""
    direct = measure_round_trip(opts.database_url("postgres"))
    through = measure_round_trip(opts.server_database_url("postgres"))
    way = []
    if opts.db_latency_ms:
        way.append(f"+{opts.db_latency_ms:g} ms each way (latency proxy)")
    if opts.pooler:
        way.append("PgBouncer 1.18, transaction mode")
    print(
        f"database path (all servers): {', '.join(way) or 'direct'}; SELECT 1 round trip "
        f"median {through:.2f} ms (direct {direct:.2f} ms)"
    )


def _print_header(opts: Options) -> None:
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    print(
        f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; "
        f"{wrk_version.splitlines()[0]}"
    )
    print(
        f"server flags (all servers): uvicorn {' '.join(SERVER_FLAGS)} --workers 1; "
        f"wrk -t1 -c32 -d{opts.duration:g}s --latency --timeout 5s"
    )
    print(f"service: {observability(server_env(opts, opts.db))}")


def _print_scrape(service: Server) -> None:
    """With metrics on: one scrape after the workloads, so a run says they were counted."""
    if not metrics_enabled(service.env):
        return
    counted = service.scrape_requests()
    found = "no scrape (METRICS_PORT, or it failed)" if counted is None else f"{counted:,.0f}"
    print(f"service /metrics after workloads: taskapi_http_requests_total {found}")


def _cold_count(opts: Options) -> int:
    """Enough never-seen tokens for one cold run: more than it can send (~3,000 req/s)."""
    return int(3000 * opts.duration) + 1000


def _redis_url() -> str | None:
    """The local Redis (127.0.0.1:6379), if one answers."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return "redis://127.0.0.1:6379/0"
    except OSError:
        pass
    return None


def _run_prod(
    opts: Options,
    env: dict[str, str],
    data: Path,
    ceilings: list[WrkResult],
    db_url: str,
    tokens: dict[str, str],
    users: dict[str, list[int]],
) -> None:
    """--prod: the workloads against the production command (2 workers by default), with
    rate limits shared through Redis as the README recommends for several workers (when a
    Redis answers on 127.0.0.1:6379; else in memory, and said so)."""
    prod_cmd = opts.prod_cmd.split() if opts.prod_cmd else uvicorn_command(opts.app, 2, "{port}")
    redis = _redis_url()
    log(f"--prod rate limits: {'Redis ' + redis if redis else 'in memory (no Redis found)'}")
    prod_env = {**env, "REDIS_URL": redis} if redis else env
    prod = Server("service_prod", opts.app, prod_env, workers=2, extra_cmd=prod_cmd)
    start_all(prod)
    rows = run_workloads(
        prod,
        data,
        opts.duration,
        db_url,
        label_prefix="prod ",
        only=opts.workloads,
        sync_clients=lambda: write_sync_clients(prod, tokens, db_url, DATA / "sync.tsv"),
        cold_tokens=lambda: write_cold_tokens(DATA / "cold.tsv", users, _cold_count(opts)),
    )
    rs, rq, rl = ceilings
    print_table(
        f"production command: {' '.join(prod_cmd)}", [*ceilings, *rows], rs.rps, rq.rps, rl.rps
    )
    prod.stop()


def _run_service(opts: Options) -> None:
    """Seed through the service, measure the ceilings, the workloads and the floor, then
    the options that need the service running (--prod, --sweep, --soak, --profile)."""
    prepare_db(opts, opts.db)
    db_url = opts.database_url(opts.db)
    env = server_env(opts, opts.db)
    service = Server("service", opts.app, env)
    start_all(service)
    users, tokens, lists = seed_via_api(service, opts.users, opts.tasks_per_user, opts.seed_seconds)
    data = DATA / "tokens.tsv"
    write_tokens(data, users, tokens, lists)
    st, qy, ql = start_ceilings(opts, opts.db)
    rs, rq, rl = measure_ceilings(st, qy, ql, data, opts.duration, db_url)
    st.stop()
    ql.stop()
    rows = run_workloads(
        service,
        data,
        opts.duration,
        db_url,
        only=opts.workloads,
        sync_clients=lambda: write_sync_clients(service, tokens, db_url, DATA / "sync.tsv"),
        cold_tokens=lambda: write_cold_tokens(DATA / "cold.tsv", users, _cold_count(opts)),
    )
    floor_rows = measure_floor(opts, opts.db, data, opts.duration)
    print_table(
        f"service {opts.app} (1 worker) vs ceilings; schema: alembic; "
        f"{opts.users} users, {sum(map(len, users.values()))} seeded tasks",
        [rs, rq, rl, *rows, *floor_rows],
        rs.rps,
        rq.rps,
        rl.rps,
    )
    print_headline(rows, rq, rl)
    print_against_floor(rows, floor_rows)
    print_worker_rss(service)
    _print_scrape(service)

    if opts.prod:
        service.stop()  # leave the CPUs to the production instance
        _run_prod(opts, env, data, [rs, rq, rl], db_url, tokens, users)
        start_all(service)
    if opts.sweep:
        start_all(qy)  # the one-query ceiling again, for reference
        print_table(
            "connection sweep (service 1 worker; one-query ceiling for reference)",
            sweep_service(service, qy, data, opts.duration),
            rs.rps,
            rq.rps,
        )
    qy.stop()
    if opts.soak:
        soak(service, data, opts.soak, opts.rss_interval)
    if opts.profile:
        profile(service, data, max(10, int(opts.duration)))
    service.stop()


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_options(argv)
    if not shutil.which("wrk"):
        print(
            "wrk is not installed. Install it with:\n    apt-get update && apt-get install -y wrk",
            file=sys.stderr,
        )
        return 2
    install_cleanup()
    DATA.mkdir(parents=True, exist_ok=True)
    (LOGS / "wrk.log").unlink(missing_ok=True)
    _print_header(opts)
    try:
        opts = replace(opts, server_pg_url=start_path(opts))
        _print_path(opts)
        if opts.ceilings_only:
            run_ceilings_only(opts)
            return 0
        if opts.scale:
            run_scale(opts)
            cleanup()
            if not (opts.sweep or opts.soak or opts.profile):
                return 0
        _run_service(opts)
        return 0
    finally:
        cleanup()
