"""Rollup compaction on a store whose history arrived in small loader rounds.

Protocol (fixed before the first run, 2026-12-04):
- Two copies of the 10 M bench store (``bench_analytics.py``'s file). In both, the rollup
  tables are rebuilt as a server fed by small rounds leaves them: the events in time order,
  cut into rounds of ``--round-events`` (default 20), one partial row per key per round (what
  :func:`avila.storage.rollups.partials` appends for each loader round).
- Copy B is then compacted by the store's own rule (each day first seen: its distinct keys
  are its baseline, as for a store upgraded to migration 14), with
  :meth:`Store.compact_rollups` until nothing is due; its wall time and rows per table are
  printed.
- The rollup-backed reports (overview 30 d, retention 12 weeks, trends 30 d, stickiness
  30 d by week) run on A and B alternately, ``--runs`` times (default 5), after one warm-up
  each whose answers must be equal; medians of wall and CPU seconds.
Run: ``python benchmarks/bench_rollup_compaction.py [--source FILE] [--runs N]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from avila.analytics import overview, retention, stickiness, trends  # noqa: E402
from avila.storage.duckdb.store import DuckDBStore  # noqa: E402
from avila.storage.rollups import REVENUE_DECIMAL, USER_KEY  # noqa: E402

PROJECT = "bench"
END = datetime(2025, 1, 1)

#: The events' rollup columns, numbered by round: rounds of ``{n}`` events in time order.
_ROUNDS = """
SELECT project_id, ts::DATE AS day, event_type, url, referrer, revenue, user_id, country,
  device_type, (row_number() OVER (ORDER BY ts, event_id) - 1) // {n} AS round FROM events
"""
#: :data:`avila.storage.rollups.DAILY_FROM` with the round as one more key.
_DAILY_BY_ROUND = f"""
SELECT project_id, day, event_type, 'type', NULL::VARCHAR, count(*), sum({REVENUE_DECIMAL})
FROM r GROUP BY round, project_id, day, event_type
UNION ALL
SELECT project_id, day, event_type, 'url', url, count(*), NULL FROM r WHERE url IS NOT NULL
GROUP BY round, project_id, day, event_type, url
UNION ALL
SELECT project_id, day, event_type, 'referrer', referrer, count(*), NULL FROM r
WHERE referrer IS NOT NULL GROUP BY round, project_id, day, event_type, referrer
"""
_USER_DAYS_BY_ROUND = f"""
SELECT project_id, day, user_id, country, device_type, count(*), {USER_KEY} FROM r
GROUP BY round, project_id, day, user_id, country, device_type
"""


def trickled(store: DuckDBStore, round_events: int) -> None:
    """The rollups as loader rounds of ``round_events`` events would have left them."""
    with store.bulk_transaction() as cursor:
        cursor.execute(f"CREATE TEMP TABLE r AS {_ROUNDS.format(n=round_events)}")
        cursor.execute("DELETE FROM rollup_daily")
        cursor.execute("DELETE FROM rollup_user_days")
        cursor.execute("INSERT INTO rollup_daily " + _DAILY_BY_ROUND)
        cursor.execute("INSERT INTO rollup_user_days " + _USER_DAYS_BY_ROUND)
        cursor.execute("DELETE FROM rollup_compactions")  # every day first seen next
        cursor.execute("DROP TABLE r")
    store._cursor().execute("CHECKPOINT")


def counts(store: DuckDBStore) -> str:
    d = store.query("SELECT count(*) FROM rollup_daily")[0][0]
    u = store.query("SELECT count(*) FROM rollup_user_days")[0][0]
    return f"rollup_daily {d:,} rows, rollup_user_days {u:,} rows"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, default=Path("data/bench/analytics_10000000.duckdb"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--round-events", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-compaction-"))
    try:
        stores = {}
        for name in ("A", "B"):
            path = work / f"{name}.duckdb"
            shutil.copy(args.source, path)
            store = DuckDBStore(path)
            t0 = time.perf_counter()
            trickled(store, args.round_events)
            print(f"{name}: rollups rebuilt as rounds of {args.round_events} events left them"
                  f" in {time.perf_counter() - t0:.1f} s: {counts(store)}")  # fmt: skip
            stores[name] = store
        t0, c0 = time.perf_counter(), time.process_time()
        days = 0
        while True:  # until every day has been seen and nothing is due
            done = stores["B"].compact_rollups(max_days=50)
            days += done.days
            if not done.more_left:
                break
        print(f"B: compacted {days} (table, day) pairs in {time.perf_counter() - t0:.1f} s"
              f" ({time.process_time() - c0:.1f} CPU-s): {counts(stores['B'])}")  # fmt: skip
        d30 = {"start_time": END - timedelta(days=30), "end_time": END}
        w12 = {"start_time": END - timedelta(weeks=12), "end_time": END}
        reports: dict[str, Callable[[DuckDBStore], Any]] = {
            "overview (30 d)": lambda s: overview(s, PROJECT, d30),
            "retention (12 weeks)": lambda s: retention(s, PROJECT, {**w12, "period": "week",
                                                                    "periods": 12}),
            "trends (30 d, by day)": lambda s: trends(s, PROJECT, {**d30, "interval": "day"}),
            "stickiness (30 d, week)": lambda s: stickiness(s, PROJECT, {**d30, "period": "week"}),
        }  # fmt: skip
        print(f"medians of {args.runs} runs, A and B alternating; wall s / CPU s")
        print(f"{'report':<26}{'A trickled':>14}{'B compacted':>14}{'B/A':>7}  same answer")
        for name, fn in reports.items():
            same = fn(stores["A"]) == fn(stores["B"])
            wall: dict[str, list[float]] = {"A": [], "B": []}
            cpu: dict[str, list[float]] = {"A": [], "B": []}
            for _ in range(args.runs):
                for side in ("A", "B"):
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn(stores[side])
                    wall[side].append(time.perf_counter() - t0)
                    cpu[side].append(time.process_time() - c0)
            a, b = statistics.median(wall["A"]), statistics.median(wall["B"])
            ca, cb = statistics.median(cpu["A"]), statistics.median(cpu["B"])
            print(f"{name:<26}{a:>7.3f}/{ca:<6.3f}{b:>7.3f}/{cb:<6.3f}{b / a:>7.2f}  "
                  f"{'yes' if same else 'NO'}")  # fmt: skip
        for store in stores.values():
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
