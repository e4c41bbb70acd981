"""The printed tables: one row per wrk run, with its ratios to the ceilings."""

from __future__ import annotations

import sys

from bench.processes import rss_mb
from bench.servers import Server
from bench.wrk import WrkResult


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f}ms"


def _ratio(rps: float, ceiling: float | None) -> str:
    return f"{rps / ceiling:.3f}" if ceiling else "-"


def print_table(
    title: str,
    rows: list[WrkResult],
    static: float | None,
    query: float | None,
    lean: float | None = None,
) -> None:
    """Rows with their ratios to the static, one-query and lean ceilings (req/s; None: "-")."""
    print()
    print(f"== {title}")
    hdr = (
        f"{'workload':<28}{'req/s':>10}{'p50':>10}{'p99':>10}{'errors':>9}{'/static':>9}"
        f"{'/1-query':>10}{'/lean':>8}{'other%':>8}  status"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        st = ",".join(f"{k}:{v}" for k, v in sorted(r.status.items()))
        print(
            f"{r.label:<28}{r.rps:>10.0f}{fmt_ms(r.p50_us):>10}{fmt_ms(r.p99_us):>10}"
            f"{r.errors:>9}{_ratio(r.rps, static):>9}{_ratio(r.rps, query):>10}"
            f"{_ratio(r.rps, lean):>8}{100 * r.foreign_cpu:>7.0f}%  {st}"
        )
    if any(r.foreign_cpu > 0.10 for r in rows):
        print(
            "other% = CPU (in % of one core) used by processes outside this benchmark during the "
            "run; > 10% means the machine was shared and the row is noisy"
        )
    sys.stdout.flush()


def print_against_floor(rows: list[WrkResult], floor_rows: list[WrkResult]) -> None:
    """The service's rows as fractions of the floor's rows ("floor: <workload>")."""
    by_label = {r.label: r.rps for r in rows}
    print(
        "service / floor (the same statements, no features): "
        + ", ".join(
            f"{r.label[7:]} {by_label[r.label[7:]] / r.rps:.3f}"
            for r in floor_rows
            if r.label[7:] in by_label  # --workloads may leave one out
        )
    )


def print_headline(rows: list[WrkResult], query: WrkResult, lean: WrkResult) -> None:
    """GET and the mix against the faster one-query ceiling (the lean one, as a rule), and
    the cold requests' extra cost: wall time per request at saturation (1/req/s, one
    worker), over the warm GET's."""
    by_label = {r.label: r for r in rows}
    best = max(query, lean, key=lambda r: r.rps)
    parts = [
        f"{name} {by_label[name].rps / best.rps:.3f}"
        for name in ("get_by_id", "mix")
        if name in by_label
    ]
    print(f"headline: service / {best.label} (the faster one-query ceiling): " + ", ".join(parts))
    warm = by_label.get("get_by_id")
    cold = [by_label[name] for name in ("cold_token", "new_user") if name in by_label]
    if warm and cold:
        print(
            "cold requests, time per request (1/req/s) over the warm GET's "
            f"({1e6 / warm.rps:.0f} µs): "
            + ", ".join(f"{r.label} +{1e6 / r.rps - 1e6 / warm.rps:.0f} µs" for r in cold)
        )


def print_worker_rss(service: Server) -> None:
    rss = {p: rss_mb(p) for p in service.worker_pids()}
    print(
        "service worker RSS after workloads: "
        + ", ".join(f"pid {p}: {v:.1f}MB" for p, v in rss.items() if v)
    )
