"""Does the per-user history slow down or grow as a server folds one day into it every day?

``rollup_user_history`` holds one row per user with the list of their active days
(src/avila/storage/user_history.py). The loader folds each finished day into it with an
``UPDATE`` of the list column; DuckDB keeps the old row versions until a checkpoint can drop
them. A server that runs for months folds hundreds of days into the same rows.

Protocol (fixed before the runs): a copy of a bench store (``analytics_<N>.duckdb``, written by
bench_analytics.py, its history folded) in a temporary directory. ``--folds`` times, as the
loader would for each new day after the history's watermark: one day's user days are appended
to ``rollup_user_days`` (those of the bench's days in turn, from its first, shifted to the new
day: the same users come back) and folded into the history (``user_history.fold``), one
transaction each. Before the first fold and after every ``--every`` folds: a ``CHECKPOINT``,
the file's size, the history's rows, and the bench's 12-week retention question (which reads
the history) timed ``--runs`` times (median). Printed as a table; ``--no-write`` keeps it out
of RESULTS.md.

    python benchmarks/bench_history_folds.py --events 10000000 --folds 360 --every 60
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analytics import END, PROJECT, SPAN_DAYS  # noqa: E402
from results import stamp, write_section  # noqa: E402

from avila.analytics import retention  # noqa: E402
from avila.storage import user_history  # noqa: E402
from avila.storage.duckdb.store import DuckDBStore  # noqa: E402

QUESTION = {
    "period": "week",
    "periods": 12,
    "start_time": END - timedelta(weeks=12),
    "end_time": END,
}


def add_day(store: DuckDBStore, day: date, source: date) -> int:
    """Append the user days of ``source`` as ``day``'s and fold ``day``; returns the user days
    added."""
    with store.bulk_transaction() as cursor:
        start = user_history.through(cursor)
        if start != day:
            raise SystemExit(f"the history's watermark is {start}, expected {day}")
        cursor.execute(
            "INSERT INTO rollup_user_days SELECT project_id, ?::DATE, user_id, country,"
            " device_type, events, user_key FROM rollup_user_days WHERE day = ?",
            [day, source],
        )
        ((added,),) = cursor.execute(
            "SELECT count(*) FROM rollup_user_days WHERE day = ?", [day]
        ).fetchall()
        user_history.fold(cursor, user_history.Fold(day, day + timedelta(days=1)))
    return int(added)


def measure(store: DuckDBStore, path: Path, runs: int) -> dict[str, float]:
    cursor = store._cursor()
    cursor.execute("CHECKPOINT")
    ((rows,),) = cursor.execute("SELECT count(*) FROM rollup_user_history").fetchall()
    ((listed,),) = cursor.execute("SELECT sum(len(days)) FROM rollup_user_history").fetchall()
    times = []
    for _ in range(runs + 1):  # the first is the warm-up
        started = time.perf_counter()
        retention(store, PROJECT, QUESTION)
        times.append(time.perf_counter() - started)
    return {
        "file (MB)": path.stat().st_size / 1e6,
        "history rows": float(rows),
        "days listed": float(listed or 0),
        "retention (s)": statistics.median(times[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/work/benchdata/O"))
    parser.add_argument("--folds", type=int, default=90)
    parser.add_argument("--every", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    source = args.dir / f"analytics_{args.events}.duckdb"
    scratch = Path(tempfile.mkdtemp(prefix="avila-bench-folds-", dir=args.dir))
    path = scratch / "avila.duckdb"
    try:
        print(f"copying {source} ...", file=sys.stderr)
        shutil.copyfile(source, path)
        store = DuckDBStore(path)
        try:
            if not store.has_user_history:
                raise SystemExit("the store keeps no per-user history")
            with store.bulk_transaction() as cursor:
                first = user_history.through(cursor)
                late = cursor.execute("SELECT count(*) FROM rollup_user_history_late").fetchall()[
                    0
                ][0]
            if late:
                raise SystemExit("fold the store's late rows first (open it with a server)")
            rows = [(0, 0.0, measure(store, path, args.runs))]
            print(f"  before: {rows[-1][2]}", file=sys.stderr)
            fold_s: list[float] = []
            for n in range(1, args.folds + 1):
                started = time.perf_counter()
                source_day = (END - timedelta(days=SPAN_DAYS)).date() + timedelta(
                    days=(n - 1) % SPAN_DAYS
                )
                added = add_day(store, first + timedelta(days=n - 1), source_day)
                if not added:
                    raise SystemExit(f"no user days on {source_day} to copy")
                fold_s.append(time.perf_counter() - started)
                if n % args.every == 0 or n == args.folds:
                    rows.append(
                        (
                            n,
                            statistics.median(fold_s[-args.every :]),
                            measure(store, path, args.runs),
                        )
                    )
                    print(f"  after {n} folds: {rows[-1][2]}", file=sys.stderr)
        finally:
            store.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    names = list(rows[0][2])
    lines = [
        f"## The per-user history after daily folds (`python benchmarks/bench_history_folds.py"
        f" --events {args.events} --folds {args.folds} --every {args.every}`)",
        "",
        stamp(),
        "",
        f"A copy of {source.name}; per fold one day of user days (the bench's days in turn,"
        " shifted past the history's watermark) appended and folded in its own transaction;"
        " after each step a"
        f" CHECKPOINT, then the 12-week retention question (median of {args.runs} after a"
        " warm-up).",
        "",
        "| folds | fold (s, median of the step) | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for n, fold_median, figures in rows:
        cells = " | ".join(
            f"{figures[k]:,.3f}" if k == "retention (s)" else f"{figures[k]:,.0f}" for k in names
        )
        lines.append(f"| {n} | {fold_median:.3f} | {cells} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("bench_history_folds", body)


if __name__ == "__main__":
    main()
