"""Analytics query benchmark: ours beside embedded ClickHouse computing the same answers.

    .venv/bin/python benchmarks/bench_analytics.py --dir /work/benchdata            # 10 M
    .venv/bin/python benchmarks/bench_analytics.py --dir /work/benchdata --events 100000000 --runs 3

Builds (once, cached under ``--dir``) a DuckDB file of N synthetic e-commerce events:
deterministic seed, vectorised with numpy into Arrow, appended in time order through the store.
The same rows are exported to Parquet and loaded into chdb (ClickHouse 26.9, MergeTree ordered
by project, day, user, time; see ``analytics_clickhouse.py``), whose hand-written native SQL
(windowFunnel, retention, uniqExact, arrays for sessions, paths, lifecycle and stickiness:
``journeys_clickhouse.py``) computes the same figures as our endpoints. Each row first checks
that both answers agree ("same answer"), then times ours and ClickHouse alternately (the check
is the warm-up of both) and prints the median wall and CPU seconds and their ratios (CPU
seconds of this process, all engine threads: on a shared machine wall time mostly measures the
neighbours); every row has a ClickHouse twin (``--no-clickhouse`` times ours alone). The
bench project has no identity links; the "stitched view" rows force the ``events_resolved``
view.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import analytics_clickhouse as CH
import duckdb
import journeys_clickhouse as J
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avila import process_memory
from avila.analytics import (
    funnel,
    lifecycle,
    overview,
    paths,
    realtime,
    retention,
    sessions,
    stickiness,
)
from avila.analytics.rfm import score_table
from avila.storage import event_order, open_store, rollups, user_history
from avila.storage.base import Store
from avila.storage.duckdb.analytics_sql import FRAGMENTS
from avila.storage.duckdb.migrations import MIGRATIONS
from avila.storage.schema import EVENT_SCHEMA

PROJECT = "bench"
END = datetime(2025, 1, 1)
SPAN_DAYS = 120
TYPES = np.array(
    ["page_view", "click", "product_view", "add_to_cart", "remove_from_cart", "checkout",
     "purchase", "search", "login", "custom"]
)  # fmt: skip
TYPE_P = np.array([0.52, 0.10, 0.16, 0.06, 0.01, 0.02, 0.015, 0.05, 0.03, 0.035])
URLS = np.array(
    ["/"] + [f"/category/{i}" for i in range(20)] + [f"/product/{i}" for i in range(60)]
)


def _strings(prefix: str, n: int) -> pa.Array:
    return pa.array([f"{prefix}{i}" for i in range(n)], pa.string())


def generate(store: Store, n_events: int, seed: int = 42, chunk: int = 1_000_000) -> None:
    """Append ``n_events`` rows in time order, ``chunk`` rows per transaction."""
    rng = np.random.default_rng(seed)
    n_users = max(n_events // 20, 10)
    users = _strings("u", n_users)
    products = _strings("p", 1000)
    urls = pa.array(URLS.tolist())
    browsers = pa.array(["Chrome", "Safari", "Firefox", "Edge"])
    countries = pa.array(["BR", "US", "DE", "PT", "IN", "FR"])
    devices = pa.array(["desktop", "mobile", "tablet"])
    start_us = int((END - timedelta(days=SPAN_DAYS) - datetime(1970, 1, 1)).total_seconds() * 1e6)
    span_us = SPAN_DAYS * 86_400 * 1_000_000
    ts_all = np.sort(rng.integers(0, span_us, n_events)) + start_us
    for lo in range(0, n_events, chunk):
        n = min(chunk, n_events - lo)
        ts = pa.array(ts_all[lo : lo + n], pa.timestamp("us"))
        received = pa.array(ts_all[lo : lo + n] + rng.integers(0, 2_000_000, n), pa.timestamp("us"))
        # Zipf-like activity: a few heavy users, a long tail.
        uidx = np.minimum((rng.pareto(1.2, n) * n_users / 50).astype(np.int64), n_users - 1)
        user_idx = (uidx * 7919 + 13) % n_users
        types = TYPES[rng.choice(len(TYPES), n, p=TYPE_P)]
        is_pv = (types == "page_view") | (types == "click")
        url_idx = np.where(rng.random(n) < 0.2, 0, rng.integers(0, len(URLS), n))
        is_prod = np.isin(types, ["product_view", "add_to_cart", "remove_from_cart"])
        is_buy = types == "purchase"
        nulls = pa.nulls(n, pa.string())
        cols: dict[str, Any] = {
            "project_id": pa.array(np.full(n, PROJECT)),
            "event_id": pc.cast(pa.array(np.arange(lo, lo + n)), pa.string()),
            "user_id": users.take(pa.array(user_idx)),
            "session_id": nulls,
            "ts": ts,
            "received_at": received,
            "event_type": pa.array(types),
            "url": pc.if_else(pa.array(is_pv), urls.take(pa.array(url_idx)), nulls),
            "product_id": pc.if_else(
                pa.array(is_prod), products.take(pa.array(rng.integers(0, 1000, n))), nulls
            ),
            "order_id": pc.if_else(
                pa.array(is_buy), pc.cast(pa.array(np.arange(lo, lo + n)), pa.string()), nulls
            ),
            "revenue": pa.array(
                np.where(is_buy, np.round(rng.lognormal(4, 1, n), 2), np.nan), mask=~is_buy
            ),  # fmt: skip
            "device_type": devices.take(pa.array(user_idx % 3)),
            "browser": browsers.take(pa.array(user_idx % 4)),
            "country": countries.take(pa.array(user_idx % 6)),
        }
        columns = [cols.get(f.name, pa.nulls(n, f.type)) for f in EVENT_SCHEMA]
        store.append_events(pa.Table.from_arrays(columns, schema=EVENT_SCHEMA))


STEPS = [
    {"name": "Home", "condition_type": "page_view", "condition_value": "/"},
    {"name": "Product", "condition_type": "product_view", "condition_value": ""},
    {"name": "Cart", "condition_type": "add_to_cart", "condition_value": ""},
    {"name": "Purchase", "condition_type": "purchase", "condition_value": ""},
]
Q_START, Q_END = END - timedelta(days=30), END
WINDOW = 14 * 86400


# --- paths, lifecycle, stickiness (issue 15): ClickHouse twins in journeys_clickhouse.py ----
def journey_cases(store: Store, ch: Any) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """Paths, lifecycle and stickiness rows: ours beside ClickHouse computing the same figures
    (any time zone, whole periods, the reports' exact semantics)."""
    d30 = {"start_time": Q_START, "end_time": Q_END}
    w12, d90 = END - timedelta(weeks=12), END - timedelta(days=90)
    home = {"condition_type": "page_view", "condition_value": "/"}
    buy = {"condition_type": "purchase"}
    berlin = "Europe/Berlin"
    limit = 50  # the paths query's default limit_per_step

    def ours_paths(**extra: Any) -> Callable[[], Any]:
        return lambda: J.paths_figures(paths(store, PROJECT, {**d30, "steps": 5, **extra}))

    def ch_paths(backwards: bool = False, **conds: str) -> Callable[[], Any]:
        return lambda: J.ch_paths_figures(
            J.ch_paths(ch, PROJECT, Q_START, Q_END, 5, **conds), 5, limit, backwards=backwards
        )

    return [
        ("paths (5 steps, 30 d)", ours_paths(), ch_paths()),
        ("paths from / (5, 30 d)", ours_paths(start=home),
         ch_paths(begin=J.CONDITIONS[("page_view", "/")])),
        ("paths to purchase", ours_paths(end=buy),
         ch_paths(True, finish=J.CONDITIONS[("purchase", "")])),
        ("lifecycle (day, 30 d)",
         lambda: J.lifecycle_figures(lifecycle(store, PROJECT, {**d30, "period": "day",
                                                                "timezone": berlin})),
         lambda: J.ch_lifecycle(ch, PROJECT, Q_START, Q_END, "day", berlin)),
        ("lifecycle (week, 12 w)",
         lambda: J.lifecycle_figures(lifecycle(store, PROJECT, {"start_time": w12, "end_time": END,
                                                                "period": "week", "timezone": berlin})),
         lambda: J.ch_lifecycle(ch, PROJECT, w12, END, "week", berlin)),
        ("stickiness (week, 30 d)",
         lambda: J.stickiness_figures(stickiness(store, PROJECT, {**d30, "period": "week",
                                                                  "timezone": berlin})),
         lambda: J.ch_stickiness(ch, PROJECT, Q_START, Q_END, "week", berlin)),
        ("stickiness (month, 90 d)",
         lambda: J.stickiness_figures(stickiness(store, PROJECT, {"period": "month",
                                                                  "start_time": d90, "end_time": END})),
         lambda: J.ch_stickiness(ch, PROJECT, d90, END, "month", "UTC")),
    ]  # fmt: skip


def _stitched(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn`` reading through the identity-resolving view, as a project with links would.
    The bench project has no links, so this joins an empty person map (a lower bound);
    ``bench_stitched.py`` measures stitching with 55,000 links."""
    frag = FRAGMENTS
    probe, frag["stitching_probe"] = frag["stitching_probe"], ""
    try:
        return fn(*args)
    finally:
        frag["stitching_probe"] = probe


def interleaved(
    mine: Callable[[], Any], theirs: Callable[[], Any], runs: int
) -> tuple[float, float, float, float]:
    """Median wall and CPU seconds of ``mine`` and ``theirs``, run alternately in the same
    process (so both see the same neighbours on a shared machine); the caller warms both up."""
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for k, fn in enumerate((mine, theirs)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    med = statistics.median
    return med(wall[0]), med(wall[1]), med(cpu[0]), med(cpu[1])


def clickhouse_cases(
    store: Store, ch: Any
) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """Rows with a ClickHouse twin: (name, ours as comparable figures, ClickHouse's figures)."""
    funnel_q = {"steps": STEPS, "start_time": Q_START, "end_time": Q_END}
    w12 = END - timedelta(weeks=12)
    retention_q = {"period": "week", "periods": 12, "start_time": w12, "end_time": END}
    d30 = {"start_time": Q_START, "end_time": Q_END}
    session_keys = ("sessions", "avg_duration_seconds", "bounce_rate", "pages_per_session", "users")
    return [
        ("funnel (4 steps, 30 d)",
         lambda: [s["count"] for s in funnel(store, PROJECT, funnel_q)["steps"]],
         lambda: CH.ch_funnel(ch, PROJECT, Q_START, Q_END, WINDOW)),
        ("retention (12 weeks)",
         lambda: [(c["cohort_start"], c["retained"])
                  for c in retention(store, PROJECT, retention_q)["cohorts"]],
         lambda: CH.ch_retention(ch, PROJECT, w12, END, 12)),
        ("overview (30 d)", lambda: CH.overview_figures(overview(store, PROJECT, d30)),
         lambda: CH.ch_overview(ch, PROJECT, Q_START, Q_END)),
        ("overview, stitched view",
         lambda: CH.overview_figures(_stitched(overview, store, PROJECT, d30)),
         lambda: CH.ch_overview(ch, PROJECT, Q_START, Q_END)),
        ("sessions (30 d)",
         lambda: {k: v for k, v in sessions(store, PROJECT, d30).items() if k in session_keys},
         lambda: CH.ch_sessions(ch, PROJECT, Q_START, Q_END)),
        ("rfm (365 d)",
         lambda: CH.rfm_digit_counts(score_table(store, PROJECT, {"reference_date": END})),
         lambda: CH.ch_rfm(ch, PROJECT, END, 365)),
        ("funnel, stitched view",
         lambda: [s["count"] for s in _stitched(funnel, store, PROJECT, funnel_q)["steps"]],
         lambda: CH.ch_funnel(ch, PROJECT, Q_START, Q_END, WINDOW)),
        ("funnel strict_order",
         lambda: [s["count"] for s in funnel(store, PROJECT, {**funnel_q, "mode": "strict_order"})["steps"]],
         lambda: CH.ch_funnel(ch, PROJECT, Q_START, Q_END, WINDOW, "strict_order")),
        ("funnel unordered",
         lambda: [s["count"] for s in funnel(store, PROJECT, {**funnel_q, "mode": "unordered"})["steps"]],
         lambda: CH.ch_funnel_unordered(ch, PROJECT, Q_START, Q_END, WINDOW)),
        ("realtime (15 min)",
         lambda: {k: v for k, v in realtime(store, PROJECT, {"now": END}).items() if k != "now"},
         lambda: CH.ch_realtime(ch, PROJECT, END)),
        *journey_cases(store, ch),
    ]  # fmt: skip


def main() -> None:
    process_memory.apply()  # memory as in a query worker (avila.process_memory)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("data/bench"))
    parser.add_argument(
        "--only",
        default="",
        help="run only the rows whose name contains this (several: separate with semicolons)",
    )
    parser.add_argument(
        "--no-clickhouse", action="store_true", help="skip the ClickHouse (chdb) column"
    )
    args = parser.parse_args()
    path = args.dir / f"analytics_{args.events}.duckdb"
    fresh = not path.exists()
    # An existing file at the current schema is only read (other benchmarks may read it at the
    # same time); an older one is opened for writing once so the new migrations run.
    current = not fresh and _schema_is_current(path)
    if not fresh and not current:
        print(f"migrating {path} to the current schema")
    if current and _rollups_due(path):
        writer = open_store("duckdb:///" + str(path))
        _compact_like_a_server(writer)
        writer.close()
    store = open_store("duckdb:///" + str(path), read_only=current)
    if fresh:
        t0 = time.perf_counter()
        generate(store, args.events)
        print(f"generated {args.events:,} events in {time.perf_counter() - t0:.1f} s -> {path}")
    if not current:  # written to: generated or migrated
        _compact_like_a_server(store)
    (rows,) = store.query("SELECT count(*) FROM events")
    print(f"{rows[0]:,} events in {path}")
    print("load average at start (1, 5, 15 min): " + _load())
    conn = store._cursor()  # the baselines run on the very same connection
    wanted = args.only.split(";")
    if args.no_clickhouse:
        print("ours alone (--no-clickhouse; medians; s)")
        print(f"{'query':<26}{'ours':>8}{'cpu ours':>10}")
        for name, mine, _ in clickhouse_cases(store, None):
            if any(part in name for part in wanted):
                mine()  # warm-up
                a, _, ca, _ = interleaved(mine, lambda: None, args.runs)
                print(f"{name:<26}{a:>8.3f}{ca:>10.3f}")
    else:
        ch = CH.open_clickhouse(conn, args.dir, args.events)
        print("ours vs ClickHouse (chdb, same rows, same run, interleaved; medians; s)")
        print(f"{'query':<26}{'ours':>8}{'ch':>8}{'ratio':>7}{'cpu ours':>10}{'cpu ch':>8}"
              f"{'ratio':>7}  same answer")  # fmt: skip
        for name, mine, theirs in clickhouse_cases(store, ch):
            if not any(part in name for part in wanted):
                continue
            agree = CH.same(mine(), theirs())  # also the warm-up of both
            a, b, ca, cb = interleaved(mine, theirs, args.runs)
            print(f"{name:<26}{a:>8.3f}{b:>8.3f}{a / b:>7.2f}{ca:>10.3f}{cb:>8.3f}"
                  f"{ca / max(cb, 1e-9):>7.2f}  {'yes' if agree else 'NO'}")  # fmt: skip
    print("load average at end (1, 5, 15 min): " + _load())
    store.close()


def _rollups_due(path: Path) -> bool:
    """Whether a server's loader would still compact rollup days, order event days or fold
    user days into the per-user history."""
    conn = duckdb.connect(str(path), read_only=True)
    try:
        due = rollups.due_compactions(conn)
        unordered = event_order.due_days(conn)
        unfolded = user_history.due_fold(conn, rollups.finished_before())
    finally:
        conn.close()
    return bool(due.pairs or due.baselines or unordered or unfolded)


def _compact_like_a_server(store: Store) -> None:
    """Leave the rollups as a running server's loader leaves a store with history
    (:mod:`avila.storage.rollups`' compaction: every bench day is finished, so each ends with
    at most a tenth more rows than keys). ``generate`` appends 1 M-event transactions (a
    loader's rounds are smaller) and never compacts; the reports would read 18 % more user-day
    rows at 100 M than on the store a server keeps (benchmarks/RESULTS.md, "Finished days compacted")."""
    t0 = time.perf_counter()
    compacted = store.compact_rollups(max_days=1000)
    days = compacted.days
    while compacted.more_left:  # days first seen this look: more may be unseen
        compacted = store.compact_rollups(max_days=1000)
        days += compacted.days
    if days:
        print(
            f"compacted {days} rollup days as a server would, in {time.perf_counter() - t0:.1f} s"
        )
    # and the events of every finished day in user order (avila.storage.event_order)
    t0 = time.perf_counter()
    ordered = store.order_event_days(max_days=1000)
    if ordered.days:
        print(
            f"ordered {ordered.days} days of events by user as a server would,"
            f" in {time.perf_counter() - t0:.1f} s"
        )
    # and the finished user days folded into the per-user history (avila.storage.user_history)
    t0 = time.perf_counter()
    folds = 0
    while True:
        folded = store.fold_user_history(max_folds=1)
        folds += folded.days
        if folded.days:
            print(
                f"  folded user days into the history ({folds} folds, {time.perf_counter() - t0:.1f} s)"
            )
        if not folded.more_left:
            break
    if folds:
        print(
            f"folded the user history in {folds} folds as a server would, in {time.perf_counter() - t0:.1f} s"
        )


def _schema_is_current(path: Path) -> bool:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        (have,) = conn.execute("SELECT max(version) FROM schema_version").fetchone() or (0,)
    finally:
        conn.close()
    return int(have or 0) >= max(version for version, _, _ in MIGRATIONS)


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
