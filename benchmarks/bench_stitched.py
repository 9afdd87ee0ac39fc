"""The identity-stitched overview and funnel at 10 M events: the person map vs the recursive view.

    .venv/bin/python benchmarks/bench_stitched.py            # copies /work/benchdata's 10 M file
    .venv/bin/python benchmarks/bench_stitched.py --source DIR/analytics_10000000.duckdb \\
        --work DIR/copy --runs 5

Protocol (fixed before the first run, 2026-11-30):

* Data: a copy of ``bench_analytics.py``'s 10 M-event file (500,000 users ``u0``..``u499999``,
  120 days; the copy is deleted at the end unless ``--keep``). Opening the copy applies
  migration 8 (an empty person map: the bench project has no identity links).
* Links (the bench project has none, and forcing the view on it would measure an empty join):
  every user id ``u{i}`` with ``i % 10 == 1`` is an anonymous id identified as ``u{i-1}``
  (10 % of the user ids, 50,000 links), and every ``u{i}`` with ``i % 100 == 2`` is identified
  as ``u{i-1}`` (5,000 more: two-hop chains ``u{i} -> u{i-1} -> u{i-2}``). So 11 % of the ids
  seen in events resolve to another, already active, person: the share of visitors a shop sees
  log in after browsing anonymously is typically of this order, and the map's size (not the
  share) is what a hash join pays for. Link time: 60 days before the data's end (before the
  queries' window). The links are written once, through ``append_table`` (the maintained path:
  its time is printed, the map's incremental build for 55,000 new links).
* Queries: the overview and the 4-step funnel over the last 30 days (``bench_analytics.py``'s),
  and (added 2026-12-04, each before its first run) the sessions report over the same 30 days
  and 12-week retention (``bench_analytics.py``'s question), trends by day, stickiness by week
  and lifecycle by day over the 30 days (UTC).
  Three ways, in the same process and run, interleaved (each run times all three in turn, the
  order rotating every run): **unstitched** (the events table; what the project would cost
  without links), **old view** (the recursive ``events_resolved_live`` view and
  ``identity_resolved`` for the rollups: the code before the person map) and **map** (the
  shipped path: the probe with its fingerprint check, then the join with ``person_map``).
  Before timing, map and old view must give the same answer (printed "same").
* Figures: median wall seconds and median CPU seconds of this process (all DuckDB threads) over
  ``--runs`` runs after one warm-up each. Target (issue 12): the stitched overview ≤ 1 s at 10 M.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from bench_analytics import END, PROJECT, Q_END, Q_START, STEPS

from avila.analytics import (
    funnel,
    lifecycle,
    overview,
    retention,
    sessions,
    stickiness,
    trends,
)
from avila.identity import IDENTITY_SCHEMA
from avila.storage import open_store
from avila.storage.base import Store
from avila.storage.duckdb.analytics_sql import FRAGMENTS

#: The probes that force each way (one parameter like the real probe, which they replace).
_FORCE = {
    "unstitched": "SELECT 1 WHERE ?::VARCHAR IS NULL",  # no row: no links
    "old view": "SELECT false WHERE ?::VARCHAR IS NOT NULL",  # map not current: recursive view
}


@contextmanager
def way(name: str) -> Iterator[None]:
    if name == "map":
        yield
        return
    probe, FRAGMENTS["stitching_probe"] = FRAGMENTS["stitching_probe"], _FORCE[name]
    try:
        yield
    finally:
        FRAGMENTS["stitching_probe"] = probe


def links(n_users: int) -> pa.Table:
    anon = [i for i in range(n_users) if i % 10 == 1 or i % 100 == 2]
    at = pa.array([END - timedelta(days=60)] * len(anon), pa.timestamp("us"))
    return pa.table(
        {
            "project_id": [PROJECT] * len(anon),
            "anonymous_id": [f"u{i}" for i in anon],
            "user_id": [f"u{i - 1}" for i in anon],
            "ts": at,
            "received_at": pa.array(
                [END - timedelta(days=60, seconds=-1)] * len(anon), pa.timestamp("us")
            ),
            "source": ["bench"] * len(anon),
            "event_id": [f"link-{i}" for i in anon],
        },
        schema=IDENTITY_SCHEMA,
    )


def timed(runs: int, fns: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, float]]:
    names = list(fns)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=Path("/work/benchdata/analytics_10000000.duckdb")
    )
    parser.add_argument("--work", type=Path, default=Path("/work/benchdata/i12-stitched"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the copy (and its links)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / args.source.name
    fresh = not path.exists()
    if fresh:
        for src in (args.source, args.source.with_name(args.source.name + ".wal")):
            if src.exists():
                shutil.copyfile(src, args.work / src.name)
    try:
        store = open_store("duckdb:///" + str(path))
        try:
            run(store, args.runs)
        finally:
            store.close()
    finally:
        if not args.keep:
            for leftover in args.work.glob(path.name + "*"):
                leftover.unlink()


def run(store: Store, runs: int) -> None:
    ((events,),) = store.query("SELECT count(*) FROM events WHERE project_id = ?", [PROJECT])
    ((users,),) = store.query(
        "SELECT count(DISTINCT user_id) FROM events WHERE project_id = ?", [PROJECT]
    )
    ((have,),) = store.query("SELECT count(*) FROM identities WHERE project_id = ?", [PROJECT])
    if not have:
        n_users = max(events // 20, 10)  # bench_analytics.generate's user count
        table = links(n_users)
        t0, c0 = time.perf_counter(), time.process_time()
        store.append_table("identities", table)
        print(
            f"wrote {table.num_rows:,} links with the person map in"
            f" {time.perf_counter() - t0:.2f} s ({time.process_time() - c0:.2f} CPU-s)"
        )
    ((mapped,),) = store.query("SELECT count(*) FROM person_map WHERE project_id = ?", [PROJECT])
    print(f"{events:,} events, {users:,} user ids, {mapped:,} ids in the person map")
    span = {"start_time": Q_START, "end_time": Q_END}
    w12 = END - timedelta(weeks=12)  # bench_analytics.py's retention question
    retention_q = {"period": "week", "periods": 12, "start_time": w12, "end_time": END}
    queries: dict[str, Callable[[], Any]] = {
        "overview (30 d)": lambda: overview(store, PROJECT, span),
        "funnel (4 steps, 30 d)": lambda: funnel(store, PROJECT, {"steps": STEPS, **span}),
        "sessions (30 d)": lambda: sessions(store, PROJECT, span),
        "retention (12 weeks)": lambda: retention(store, PROJECT, retention_q),
        "trends (30 d, by day)": lambda: trends(store, PROJECT, {"interval": "day", **span}),
        "stickiness (30 d, week)": lambda: stickiness(store, PROJECT, {"period": "week", **span}),
        "lifecycle (30 d, day)": lambda: lifecycle(store, PROJECT, {"period": "day", **span}),
    }
    print(f"medians of {runs} runs, interleaved; wall s / CPU s of this process")
    print(f"{'query':<24}{'way':<12}{'wall':>8}{'cpu':>8}{'wall/unst.':>12}  answer")
    for qname, query in queries.items():
        ways = ("unstitched", "old view", "map")

        def forced(name: str, q: Callable[[], Any] = query) -> Any:
            with way(name):
                return q()

        answers = {name: forced(name) for name in ways}  # also the warm-up
        same = answers["map"] == answers["old view"]
        got = timed(runs, {name: (lambda n=name: forced(n)) for name in ways})
        base = got["unstitched"][0]
        for name in ways:
            wall, cpu = got[name]
            note = "" if name == "unstitched" else ("same as old view" if same else "DIFFERS")
            if name == "old view":
                note = ""
            print(f"{qname:<24}{name:<12}{wall:>8.3f}{cpu:>8.3f}{wall / base:>12.2f}  {note}")
        if not same:
            raise SystemExit("the person map and the recursive view disagree")


if __name__ == "__main__":
    main()
