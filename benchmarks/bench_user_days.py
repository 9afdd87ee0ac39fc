"""Reports from the rollups' user days against the same reports from the events: same
question, same file, same process, alternating (protocol: benchmarks/RESULTS.md, "Retention and
stickiness from the user days").

    python benchmarks/bench_user_days.py /work/benchdata/analytics_10000000.duckdb --pairs 5 \
        --report retention

Questions (``--report``): ``retention`` is bench_analytics' "retention (12 weeks)" row (weekly,
12 periods, any event, UTC, the 12 weeks before 2025-01-01); ``stickiness-month`` its
"stickiness (month, 90 d)" row; ``stickiness-week``, ``lifecycle-day`` and ``lifecycle-week``
its "stickiness (week, 30 d)", "lifecycle (day, 30 d)" and "lifecycle (week, 12 w)" rows asked
in UTC (the bench rows ask in Europe/Berlin, which the user days cannot answer);
``trends-day`` is trends by day over the overview's 30 days. Each pair times the
events path (``raw=True``) and the user-days path once each, in alternating order, after one
warm-up of both; wall and CPU seconds (``time.process_time``: all of DuckDB's threads) are
printed per pair, then medians and the pairs in which the user days took less CPU. Answers are
asserted equal in every pair.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from avila.analytics import lifecycle, retention, stickiness, trends
from avila.storage import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import stamp  # noqa: E402

PROJECT = "bench"
END = datetime(2025, 1, 1)
REPORTS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "retention": (retention, {"period": "week", "periods": 12,
                              "start_time": END - timedelta(weeks=12), "end_time": END}),
    "stickiness-month": (stickiness, {"period": "month", "start_time": END - timedelta(days=90),
                                      "end_time": END}),
    "stickiness-week": (stickiness, {"period": "week", "start_time": END - timedelta(days=30),
                                     "end_time": END}),
    "lifecycle-day": (lifecycle, {"period": "day", "start_time": END - timedelta(days=30),
                                  "end_time": END}),
    "lifecycle-week": (lifecycle, {"period": "week", "start_time": END - timedelta(weeks=12),
                                   "end_time": END}),
    "trends-day": (trends, {"interval": "day", "start_time": END - timedelta(days=30),
                            "end_time": END}),
}  # fmt: skip


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="a bench_analytics store file")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--report", choices=sorted(REPORTS), default="retention")
    args = parser.parse_args()
    store = open_store("duckdb:///" + str(args.file), read_only=True)
    (rows,) = store.query("SELECT count(*) FROM events")
    print(f"{stamp()}; {rows[0]:,} events in {args.file}")
    report, question = REPORTS[args.report]
    print(f"{args.report}: {question}")
    events = lambda: report(store, PROJECT, question, raw=True)  # noqa: E731
    user_days = lambda: report(store, PROJECT, question)  # noqa: E731
    assert events() == user_days(), "the two paths disagree"  # also the warm-up
    figures: dict[str, list[tuple[float, float]]] = {"events": [], "user days": []}
    wins = 0
    for pair in range(args.pairs):
        order = [("events", events), ("user days", user_days)]
        if pair % 2:
            order.reverse()
        got = {}
        for name, fn in order:
            wall, cpu, got[name] = _timed(fn)
            figures[name].append((wall, cpu))
        assert got["events"] == got["user days"], "the two paths disagree"
        (ew, ec), (uw, uc) = figures["events"][-1], figures["user days"][-1]
        wins += uc < ec
        print(f"pair {pair + 1}: events {ew:.3f} s wall {ec:.3f} CPU-s | "
              f"user days {uw:.3f} s wall {uc:.3f} CPU-s")  # fmt: skip
    for name, pairs in figures.items():
        wall = statistics.median(w for w, _ in pairs)
        cpu = statistics.median(c for _, c in pairs)
        print(f"median {name}: {wall:.3f} s wall, {cpu:.3f} CPU-s")
    print(f"user days took less CPU in {wins} of {args.pairs} pairs")
    store.close()


if __name__ == "__main__":
    main()
