"""What an integer user key would buy the user-keyed passes over the user days (issue 13).

    python benchmarks/bench_user_keys.py /work/benchdata/analytics_100000000.duckdb [--runs 5]

Exploratory, for a design decision, not a product path: at 100 M events most of the time of
retention, the overview's users and the sessions report's users is one hash aggregation of the
user days by ``user_id``, a string DuckDB decodes (DICT_FSST) and hashes per row. This copies a
``bench_analytics.py`` store, adds to ``rollup_user_days`` three candidate keys:

- ``k128``: ``md5_number(user_id)`` (UHUGEINT, stable across DuckDB versions);
- ``k64``: ``md5_number_lower(user_id)`` (UBIGINT, stable; two users share one with probability
  ~n^2 / 2^65: ~3e-7 for 3 M users);
- ``k32``: a dense INTEGER from a dictionary table (exact; the loader would have to keep the
  dictionary up to date),

then times three passes shaped like the product's (the whole history per user as retention
reads it, distinct users of 30 days as the overview and sessions report count them, users by
country and device of 30 days as the overview's active-users pass groups them) keyed by each,
alternating, ``--runs`` times each, and prints medians. Every pass must give the same answer
with every key (checked). The copy is deleted afterwards. Nothing is written to RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

KEYS = ("user_id", "k128", "k64", "k32")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a bench_analytics.py DuckDB file")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avila-user-keys-", dir=args.source.parent) as tmp:
        copy = Path(tmp) / "copy.duckdb"
        shutil.copy(args.source, copy)
        con = duckdb.connect(str(copy))
        ((rows, users),) = con.execute(
            "SELECT count(*), count(DISTINCT user_id) FROM rollup_user_days"
        ).fetchall()
        print(f"{args.source.name}: {rows:,} user days, {users:,} users")
        started = time.perf_counter()
        con.execute("ALTER TABLE rollup_user_days ADD COLUMN k128 UHUGEINT")
        con.execute("ALTER TABLE rollup_user_days ADD COLUMN k64 UBIGINT")
        con.execute("ALTER TABLE rollup_user_days ADD COLUMN k32 INTEGER")
        con.execute(
            "CREATE TABLE user_keys AS SELECT user_id, (row_number() OVER ())::INTEGER AS k"
            " FROM (SELECT DISTINCT user_id FROM rollup_user_days)"
        )
        con.execute(
            "UPDATE rollup_user_days SET k128 = md5_number(rollup_user_days.user_id),"
            " k64 = md5_number_lower(rollup_user_days.user_id), k32 = u.k"
            " FROM user_keys u WHERE u.user_id = rollup_user_days.user_id"
        )
        con.execute("CHECKPOINT")
        print(f"keys added in {time.perf_counter() - started:.1f} s")
        (last,) = con.execute("SELECT max(day) FROM rollup_user_days").fetchone() or (None,)
        passes = {
            "whole history per user": (
                "SELECT count(*), sum(a) FROM (SELECT {k}, min(day) AS f,"
                " bit_or(1::UBIGINT << ((day - DATE '2020-01-01') % 60)) AS a"
                " FROM rollup_user_days WHERE project_id = 'bench' GROUP BY {k})"
            ),
            "distinct users, 30 days": (
                "SELECT count(DISTINCT {k}) FROM rollup_user_days"
                f" WHERE project_id = 'bench' AND day > DATE '{last}' - 30"
            ),
            "users x country x device, 30 days": (
                "SELECT count(*) FROM (SELECT {k}, country, device_type FROM rollup_user_days"
                f" WHERE project_id = 'bench' AND day > DATE '{last}' - 30 GROUP BY ALL)"
            ),
        }
        walls: dict[tuple[str, str], list[float]] = {}
        answers: dict[str, set[tuple[object, ...]]] = {name: set() for name in passes}
        for _ in range(args.runs):
            for key in KEYS:
                for name, sql in passes.items():
                    t = time.perf_counter()
                    answer = con.execute(sql.format(k=key)).fetchall()
                    walls.setdefault((name, key), []).append(time.perf_counter() - t)
                    answers[name].add(tuple(answer))
        con.close()
    for name, found in answers.items():
        assert len(found) == 1, (name, found)
    print(f"median wall s of {args.runs} runs (ratio to user_id)")
    print(f"{'pass':36s}" + "".join(f"{key:>16s}" for key in KEYS))
    for name in passes:
        base = statistics.median(walls[(name, "user_id")])
        cells = []
        for key in KEYS:
            median = statistics.median(walls[(name, key)])
            cells.append(f"{median:8.3f} ({median / base:.2f})")
        print(f"{name:36s}" + "".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
    main()
