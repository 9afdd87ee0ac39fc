"""What a user-weeks rollup would buy retention's per-user pass (issue 13).

    python benchmarks/bench_user_weeks.py /work/benchdata/analytics_100000000.duckdb [--runs 5]

Exploratory, for a design decision, not a product path. At 100 M events retention (12 weeks,
UTC, the default question) spends most of its time in one aggregation by user of the whole
history of ``rollup_user_days`` (a row per user, UTC day, country and device type). A table
with a row per user and UTC ISO week (Monday) would hold fewer rows; a week that holds none of
the question's bounds (start, end, horizon) can stand in for its days, the weeks that hold one
are read from the user days. This script:

1. asks the product's ``retention`` for ``bench_analytics.py``'s row and captures the SQL of
   its per-user pass (the user-days relation in it);
2. builds the user weeks from the user days in a temporary table (read-only open: the bench
   file is not changed);
3. times, alternating the order, ``--runs`` times each: the captured pass as it is, the same
   pass with weeks for the whole weeks and days for the partial ones, and the floor of any
   pass over the user days (``min``/``max``/``count`` grouped by user, no expressions);
4. checks that both passes give the same rows, and prints medians (wall and process CPU).

Nothing is written to RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_analytics as bench  # noqa: E402
from bench_user_days import _timed  # noqa: E402

from avila.analytics.retention import retention  # noqa: E402
from avila.storage.factory import open_store  # noqa: E402

#: (``datetime.time`` is truthy at midnight too: compare with it, do not test it)
MIDNIGHT = datetime.min.time()
USER_DAYS = "(SELECT project_id, user_id, CAST(day AS TIMESTAMP) AS ts FROM rollup_user_days)"
WEEKS_DDL = (
    "CREATE TEMP TABLE user_weeks AS SELECT project_id, date_trunc('week', day)::DATE AS week,"
    " user_id, sum(events)::BIGINT AS events FROM rollup_user_days GROUP BY ALL"
)
FLOOR = (
    "SELECT count(*), sum(n) FROM (SELECT min(day) AS d0, max(day) AS d1, count(*) AS n"
    " FROM rollup_user_days WHERE project_id = ? GROUP BY user_id)"
)


def captured_pass(path: Path, query: dict[str, Any]) -> tuple[str, list[Any]]:
    """The SQL and parameters of the product's per-user pass for ``query``."""
    store = open_store(f"duckdb:///{path}", read_only=True)
    seen: list[tuple[str, list[Any]]] = []
    original = store.query_arrow

    def recording(sql: str, params: Any = (), *args: Any, **kwargs: Any) -> Any:
        seen.append((sql, list(params)))
        return original(sql, params, *args, **kwargs)

    store.query_arrow = recording  # type: ignore[method-assign]
    retention(store, bench.PROJECT, query)
    store.close()
    sql, params = seen[-1]
    if USER_DAYS not in sql:
        raise SystemExit("retention did not read the user days (rollups disagree?)")
    return sql, params


def mixed_relation(bounds: list[datetime]) -> str:
    """Weeks for the whole weeks, days for the weeks that hold a bound."""
    mondays = sorted(
        {
            (b - timedelta(days=b.weekday())).date()
            for b in bounds
            if b.weekday() or b.time() != MIDNIGHT
        }
    )
    weeks = "(SELECT project_id, user_id, CAST(week AS TIMESTAMP) AS ts FROM user_weeks)"
    if not mondays:  # (``NOT IN (NULL)`` would leave out every week)
        return weeks
    marks = ", ".join(f"DATE '{m}'" for m in mondays)
    return (
        "(SELECT project_id, user_id, CAST(week AS TIMESTAMP) AS ts FROM user_weeks"
        f" WHERE week NOT IN ({marks}) UNION ALL SELECT project_id, user_id,"
        " CAST(day AS TIMESTAMP) AS ts FROM rollup_user_days"
        f" WHERE date_trunc('week', day)::DATE IN ({marks}))"
    )


def timed(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds (all of DuckDB's threads) of one pass, and its rows sorted."""
    return _timed(lambda: sorted(con.execute(sql, params).fetchall()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a bench_analytics.py DuckDB file")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    start, end = bench.END - timedelta(weeks=12), bench.END
    query = {"period": "week", "periods": 12, "start_time": start, "end_time": end}
    days_sql, params = captured_pass(args.source, query)
    horizon = end + timedelta(days=7 * (12 + 2))
    weeks_sql = days_sql.replace(USER_DAYS, mixed_relation([start, end, horizon]))
    con = duckdb.connect(str(args.source), read_only=True)
    built = time.perf_counter()
    con.execute(WEEKS_DDL)
    ((weeks,),) = con.execute("SELECT count(*) FROM user_weeks").fetchall()
    ((days,),) = con.execute("SELECT count(*) FROM rollup_user_days").fetchall()
    print(
        f"{args.source.name}: {days:,} user days, {weeks:,} user weeks"
        f" (built in {time.perf_counter() - built:.1f} s)"
    )
    passes = {
        "user days": (days_sql, params),
        "user weeks + partial weeks' days": (weeks_sql, params),
    }
    passes["floor: min/max/count by user"] = (FLOOR, [bench.PROJECT])
    answers = {name: timed(con, sql, p)[2] for name, (sql, p) in list(passes.items())[:2]}
    if len(set(map(repr, answers.values()))) != 1:
        raise SystemExit("the two passes disagree")
    print(f"same answer from both passes ({len(next(iter(answers.values())))} rows)")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in passes}
    names = list(passes)
    for run in range(args.runs):
        for name in names if run % 2 == 0 else names[::-1]:
            wall, cpu, _ = timed(con, *passes[name])
            times[name].append((wall, cpu))
    base = statistics.median(w for w, _ in times["user days"])
    for name, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(
            f"{name:34} wall {wall:.3f} s ({wall / base:.2f}x)  cpu {cpu:.3f} s"
            f"  runs {', '.join(f'{w:.3f}' for w, _ in runs)}"
        )


if __name__ == "__main__":
    main()
