"""--scale: the same requests with 10 thousand and 10 million tasks, and deep pagination;
the change feed's polls too (its cost must not grow with the table).

A separate database (`<db>_scale`) filled by SQL (seeding through the API would take hours):
100,000 users, each with a list; phase 10k, 200 users x 50 tasks; phase 10M, grown over all
users plus one user (the whale) with 100,000 tasks, whose list is then walked page by page.
Each phase also measures the screens of a task app (issue 13: a list, due-date order,
overdue, a label, a search); the tasks are spread for them as bench/seeding.py spreads its
own (bench/database.py `task_insert`, `label_insert`).
"""

from __future__ import annotations

import http.client
import json
import re
import statistics
import time
import urllib.parse
from pathlib import Path

from bench.core import API, DATA, log
from bench.database import execute_bulk, fetch, label_insert, prepare_db, task_insert
from bench.options import Options
from bench.report import fmt_ms, print_table
from bench.seeding import make_token, tokens_from_db, write_sync_clients, write_tokens
from bench.servers import Server, server_env, start_all
from bench.wrk import WrkResult, wrk

SCALE_USERS = 100_000
SAMPLE_USERS = 200  # phase A: 10k tasks = 200 users x 50
SAMPLE_PER_USER = 50
WHALE = "scale-whale"
WHALE_TASKS = 100_000
SCREENS = {
    "screen list": "screen_list",
    "screen due date": "screen_due",
    "screen overdue": "screen_overdue",
    "screen label": "screen_label",
    "screen search": "screen_search",
}
PHASE_ROWS = ("one-query ceiling", "get_by_id", "list first page", "feed poll", *SCREENS)
WITHIN = {"screen search": 0.5}  # the bound for 10M against 10k; 20% for the rest
DEEP_PAGES = (11, 101, 501)  # pages of the whale's list measured with wrk besides page 1

Phase = dict[str, WrkResult]


def _user(modulo: int) -> str:
    """SQL: the owner of task g, one of `modulo` scale users."""
    return f"'scale-u-' || lpad((g % {modulo})::text, 6, '0')"


def _list(modulo: int) -> str:
    """SQL: the list of task g (a third of each user's tasks are in the user's list, whose
    id is the user's number plus one)."""
    return f"CASE WHEN g % 3 = 1 THEN g % {modulo} + 1 END"


WHALE_LIST = SCALE_USERS + 1


def _load_small(url: str) -> None:
    execute_bulk(
        url,
        [
            f"""INSERT INTO users (id, email, name, created_at, updated_at)
            SELECT 'scale-u-' || lpad(g::text, 6, '0'), 'u' || g || '@bench.example', 'User ' || g,
                   now(), now() FROM generate_series(0, {SCALE_USERS - 1}) g""",
            f"""INSERT INTO users (id, email, name, created_at, updated_at)
            VALUES ('{WHALE}', 'whale@bench.example', 'Whale', now(), now())""",
            f"""INSERT INTO lists (id, user_id, name, created_at, updated_at)
            OVERRIDING SYSTEM VALUE
            SELECT g + 1, 'scale-u-' || lpad(g::text, 6, '0'), 'Errands', now(), now()
            FROM generate_series(0, {SCALE_USERS - 1}) g""",
            f"""INSERT INTO lists (id, user_id, name, created_at, updated_at)
            OVERRIDING SYSTEM VALUE
            VALUES ({WHALE_LIST}, '{WHALE}', 'Errands', now(), now())""",
            "SELECT setval(pg_get_serial_sequence('lists', 'id'), (SELECT max(id) FROM lists))",
            task_insert(
                1, SAMPLE_USERS * SAMPLE_PER_USER, _user(SAMPLE_USERS), _list(SAMPLE_USERS)
            ),
            label_insert(0),
            "VACUUM ANALYZE users, lists",
            "VACUUM ANALYZE tasks, task_labels",
        ],
    )


def _grow(url: str, n_big: int) -> None:
    """Tasks up to `n_big`, the whale's included; the non-constraint indexes dropped during
    the load and rebuilt from their own definitions, foreign-key triggers skipped."""
    per_user = max(1, (n_big - SAMPLE_USERS * SAMPLE_PER_USER - WHALE_TASKS) // SCALE_USERS)
    log(
        f"scale: growing tasks to {n_big:,} (whale 100k tasks, ~{per_user}/user); indexes dropped "
        "during load and rebuilt from their own definitions"
    )
    idx = fetch(
        url,
        """
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.tablename = 'tasks' AND i.schemaname = current_schema()
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)""",
    )
    start = SAMPLE_USERS * SAMPLE_PER_USER + 1
    end_rest = n_big - WHALE_TASKS
    chunk = 1_000_000
    stmts = ["SET session_replication_role = replica"]  # skip FK triggers during bulk load
    stmts += [f'DROP INDEX IF EXISTS "{r["indexname"]}"' for r in idx]
    for lo in range(start, end_rest + 1, chunk):
        last = min(lo + chunk - 1, end_rest)
        stmts.append(task_insert(lo, last, _user(SCALE_USERS), _list(SCALE_USERS)))
    whale_list = f"CASE WHEN g % 3 = 1 THEN {WHALE_LIST} END"
    stmts.append(task_insert(end_rest + 1, end_rest + WHALE_TASKS, f"'{WHALE}'", whale_list))
    stmts += [r["indexdef"] for r in idx]  # the search's GIN index too: the longest build
    stmts.append(label_insert(SAMPLE_USERS * SAMPLE_PER_USER))
    stmts += ["SET session_replication_role = origin", "VACUUM ANALYZE tasks, task_labels"]
    t0 = time.monotonic()
    execute_bulk(url, stmts)
    log(f"scale: load took {time.monotonic() - t0:.0f}s")


def _phase_tokens(url: str, path: Path, n_users: int, ids_per_user: int, big: bool) -> None:
    def query(sample: str) -> str:
        return f"""
            WITH u AS (SELECT DISTINCT user_id FROM tasks{sample}
                       WHERE user_id <> '{WHALE}' LIMIT {n_users})
            SELECT u.user_id, ARRAY(SELECT t.id FROM tasks t WHERE t.user_id = u.user_id
                                    ORDER BY random() LIMIT {ids_per_user}) AS ids,
                   (SELECT min(l.id) FROM lists l WHERE l.user_id = u.user_id) AS list_id
            FROM u"""

    found = 0
    if big:  # random users spread over the whole table
        found = tokens_from_db(url, path, query(" TABLESAMPLE SYSTEM (1)"))
    if found < n_users // 4:
        found = tokens_from_db(url, path, query(""))
    log(f"scale tokens: {found} users -> {path}")


def _measure_phase(
    opts: Options, url: str, service: Server, qenv: dict[str, str], phase: str
) -> Phase:
    """A fresh service and one-query ceiling on GET by id and the first list page."""
    tokens = DATA / f"tokens_scale_{phase}.tsv"
    _phase_tokens(url, tokens, 2000 if phase == "10M" else SAMPLE_USERS, 20, phase == "10M")
    qy = Server(f"ceiling_query_scale_{phase}", "bench.ceiling_query:app", qenv)
    start_all(service, qy)
    wrk("warmup", service.url, "get_by_id", tokens, 3, 32, quiet=True)
    wrk("warmup", qy.url, "get_by_id", tokens, 2, 32, quiet=True)

    def best(label: str, url_: str, script: str) -> WrkResult:
        # best of --repeat runs: the machine is shared, transient foreign load only lowers rps
        runs = [
            wrk(f"[{phase}] {label}", url_, script, tokens, opts.duration)
            for _ in range(max(1, opts.repeat))
        ]
        return max(runs, key=lambda r: r.rps)

    # The change feed's polling clients (issue 12): the phase's users, each after a first
    # full sync; a poll since that token reads the owner's changes past it (none here).
    users = [line.split("\t") for line in tokens.read_text().splitlines() if line]
    write_sync_clients(service, {u[0]: u[1] for u in users}, url, DATA / "sync.tsv")
    results = {
        "one-query ceiling": best("one-query ceiling", qy.url, "get_by_id"),
        "get_by_id": best("get_by_id", service.url, "get_by_id"),
        "list first page": best("list first page", service.url, "list"),
        "feed poll": best("feed poll", service.url, "poll"),
        **{label: best(label, service.url, script) for label, script in SCREENS.items()},
    }
    print_table(f"scale phase {phase}", list(results.values()), None, results[PHASE_ROWS[0]].rps)
    qy.stop()
    return results


def deep_pagination(
    server: Server, limit: int, max_pages: int, max_seconds: float
) -> list[tuple[int, float]]:
    """Walk the whale's list by its next links: (page, seconds) of each page; the cursor URLs
    of pages in DEEP_PAGES are saved for wrk."""
    tok = make_token(WHALE)
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    path = f"{API}?limit={limit}"
    out: list[tuple[int, float]] = []
    t_end = time.monotonic() + max_seconds
    page = 0
    seen = 0
    while path and page < max_pages and time.monotonic() < t_end:
        t0 = time.perf_counter()
        c.request("GET", path, headers={"Authorization": f"Bearer {tok}"})
        r = c.getresponse()
        body = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200:
            print(f"deep pagination: page {page} -> {r.status} {body[:200]!r}")
            break
        page += 1
        seen += len(json.loads(body))
        out.append((page, dt))
        link = r.getheader("link") or ""
        m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
        if not m:
            break
        nxt = urllib.parse.urlsplit(m.group(1))
        path = nxt.path + ("?" + nxt.query if nxt.query else "")
        if page + 1 in DEEP_PAGES:
            (DATA / f"deep_page_{page + 1}.url").write_text(path)
    c.close()
    log(f"deep pagination: {page} pages, {seen} tasks")
    return out


def _print_deep_pagination(pages: list[tuple[int, float]], limit: int) -> None:
    lat = [d for _, d in pages]
    n = len(lat)
    buckets = [(0, 10), (10, 100), (100, n // 2), (n // 2, n - 10), (n - 10, n)]
    print(
        f"\n== deep pagination of a {WHALE_TASKS:,}-task user, limit={limit}, {n} pages "
        "(sequential, one keep-alive connection)"
    )
    for lo, hi in buckets:
        seg = lat[max(0, lo) : max(0, hi)]
        if seg:
            print(
                f"  pages {lo + 1:>5}-{hi:<5}  median {1000 * statistics.median(seg):7.2f}ms  "
                f"p90 {1000 * sorted(seg)[int(0.9 * (len(seg) - 1))]:7.2f}ms"
            )
    if n >= 20:
        early = statistics.median(lat[:10])
        late = statistics.median(lat[-10:])
        print(
            f"  last-10 / first-10 median ratio: {late / early:.2f}  "
            f"({'flat' if late / early < 1.2 else 'NOT flat'})"
        )


def _whale_pages(service: Server, limit: int, dur: float) -> None:
    """wrk on the whale's first page and on the deep pages saved by `deep_pagination`."""
    wtok = DATA / "tokens_whale.tsv"
    write_tokens(wtok, {WHALE: []})
    paths = {1: f"{API}?limit={limit}"}
    for pg in DEEP_PAGES:
        f = DATA / f"deep_page_{pg}.url"
        if f.exists():
            paths[pg] = f.read_text()
    rows = [
        wrk(f"whale page {pg}", service.url, "fixed", wtok, dur, extra_env={"BENCH_PATH": path})
        for pg, path in paths.items()
    ]
    print_table("whale pages via wrk (same cost expected)", rows, None, None)


def _within(ratio: float, bound: float = 0.2) -> str:
    return "OK" if 1 - bound <= ratio <= 1 / (1 - bound) else f"OUTSIDE {bound:.0%}"


def _print_summary(small: Phase, big: Phase) -> None:
    print("\n== scale summary (10M vs 10k; within 20% required, a search within 50%)")
    for k in PHASE_ROWS:
        a, b = small[k], big[k]
        ratio = b.rps / a.rps if a.rps else 0
        p50r = b.p50_us / a.p50_us if a.p50_us else 0
        print(
            f"  {k:<20} 10k {a.rps:8.0f}/s p50 {fmt_ms(a.p50_us)}   10M {b.rps:8.0f}/s p50 "
            f"{fmt_ms(b.p50_us)}   rps ratio {ratio:.2f}  p50 ratio {p50r:.2f}  "
            f"{_within(ratio, WITHIN.get(k, 0.2))}"
        )
    print("  normalised by the one-query ceiling of the same phase (cancels machine noise):")
    ca, cb = small[PHASE_ROWS[0]].rps, big[PHASE_ROWS[0]].rps
    for k in PHASE_ROWS[1:]:
        na, nb = small[k].rps / ca, big[k].rps / cb
        print(
            f"  {k:<20} /ceiling 10k {na:.3f}  10M {nb:.3f}  ratio {nb / na:.2f}  "
            f"{_within(nb / na, WITHIN.get(k, 0.2))}"
        )


def run_scale(opts: Options) -> None:
    db = opts.db + "_scale"
    prepare_db(opts, db)
    url = opts.database_url(db)
    env = server_env(opts, db)
    log(f"scale: database {db}; 100k users, 10k tasks then {opts.scale_tasks:,} tasks")
    _load_small(url)
    service = Server("service_scale", opts.app, env)
    qenv = {**env, "CEILING_POOL_SIZE": str(opts.pool_size)}
    small = _measure_phase(opts, url, service, qenv, "10k")
    service.stop()
    _grow(url, opts.scale_tasks)
    big = _measure_phase(opts, url, service, qenv, "10M")
    pages = deep_pagination(
        service, opts.page_limit, WHALE_TASKS // opts.page_limit + 2, opts.deep_seconds
    )
    if pages:
        _print_deep_pagination(pages, opts.page_limit)
    _whale_pages(service, opts.page_limit, opts.duration)
    service.stop()
    _print_summary(small, big)
