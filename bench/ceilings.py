"""What the service is compared with, measured in the same run on the same server and flags.

The ceilings (`ceiling_static.py`, `ceiling_query.py` with asyncpg's Pool and with the lean
handout) bound what any service could reach; the floor (`floor_mix.py`) is the service's own
statements with none of its features.
"""

from __future__ import annotations

from pathlib import Path

from bench.core import DATA
from bench.database import prepare_db, settle
from bench.options import Options
from bench.processes import check_quiet
from bench.report import print_table
from bench.seeding import seed_via_sql
from bench.servers import Server, server_env, start_all
from bench.wrk import WrkResult, sweep, warm_then_measure


def start_ceilings(opts: Options, db: str) -> tuple[Server, Server, Server]:
    """The static, one-query and lean one-query ceilings; the static one started and ready.
    The two one-query ceilings are started one at a time by `measure_ceilings` (each holds
    its whole pool: on a PostgreSQL shared with other work both at once, beside the
    service's connections, could pass max_connections)."""
    env = server_env(opts, db)
    env["CEILING_POOL_SIZE"] = str(opts.pool_size)
    st = Server("ceiling_static", "bench.ceiling_static:app", env)
    qy = Server("ceiling_query", "bench.ceiling_query:app", env)
    ql = Server("ceiling_query_lean", "bench.ceiling_query:app", {**env, "CEILING_POOL": "lean"})
    start_all(st)
    return st, qy, ql


def measure_ceilings(
    st: Server, qy: Server, ql: Server, data: Path, dur: float, db: str, conns: int = 32
) -> tuple[WrkResult, WrkResult, WrkResult]:
    check_quiet("before ceilings")
    # Same Lua client code (get_by_id.lua, same tokens and ids) as the service's GET, each
    # from a settled database (vacuumed, checkpointed), as the service's workloads.
    settle(db)
    rs = warm_then_measure("ceiling: static", st.url, "get_by_id", data, dur, conns)
    settle(db)
    start_all(qy)
    rq = warm_then_measure("ceiling: one-query", qy.url, "get_by_id", data, dur, conns)
    qy.stop()
    # The one-query app with the service's own connection handout instead of asyncpg's
    # Pool: what the service is compared with once pool overhead is taken out.
    settle(db)
    start_all(ql)
    rl = warm_then_measure("ceiling: one-query (lean)", ql.url, "get_by_id", data, dur, conns)
    ql.stop()
    return rs, rq, rl


def measure_floor(opts: Options, db: str, data: Path, dur: float) -> list[WrkResult]:
    """GET by id and the mix on `bench/floor_mix.py`: the service's own statements with none
    of its features, the fastest these requests can be answered on this server and flags."""
    floor = Server(
        "floor_mix",
        "bench.floor_mix:app",
        {**server_env(opts, db), "DB_POOL_SIZE": str(opts.pool_size)},
    )
    start_all(floor)
    rows = []
    for w in ("get_by_id", "mix"):
        settle(opts.database_url(db))
        rows.append(warm_then_measure(f"floor: {w}", floor.url, w, data, dur))
    floor.stop()
    return rows


def run_ceilings_only(opts: Options) -> None:
    """--ceilings-only: tasks inserted by SQL, no service; the ceilings (and their sweep)."""
    prepare_db(opts, opts.db)
    data = DATA / "tokens.tsv"
    n_tasks = seed_via_sql(opts.database_url(opts.db), data, opts.users, opts.tasks_per_user)
    st, qy, ql = start_ceilings(opts, opts.db)
    rs, rq, rl = measure_ceilings(st, qy, ql, data, opts.duration, opts.database_url(opts.db))
    ql.stop()
    print_table(
        f"ceilings ({n_tasks} tasks, schema: alembic)", [rs, rq, rl], rs.rps, rq.rps, rl.rps
    )
    if opts.sweep:
        start_all(qy)
        targets = [("static", st.url, "get_by_id"), ("one-query", qy.url, "get_by_id")]
        rows = sweep(targets, data, opts.duration)
        print_table("ceilings connection sweep", rows, rs.rps, rq.rps)
