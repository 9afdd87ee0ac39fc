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
with every key (checked).

Then what a dense key assigned *lazily* would cost (the loader cannot afford a dictionary lookup
per small round; a later pass, such as the rollup compaction, could key many rounds' rows at
once): the user days of the last ``--pending-days`` days lose their ``k32`` and the users first
seen on them leave the dictionary; the whole-history pass is timed with those rows mapped
through the dictionary at query time (new users numbered on the fly) against the keyed and the
string pass, and one keying pass (new users into the dictionary, keys set) is timed. The copy
is deleted afterwards. Nothing is written to RESULTS.md.
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
    parser.add_argument("--pending-days", type=int, default=1)
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
        lazy = _lazy_keying(con, passes["whole history per user"], args.pending_days, args.runs)
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
    print(f"lazy keying, the last {args.pending_days} day(s) unkeyed (median wall s):")
    for name, value in lazy.items():
        print(f"  {name:60s}{value:10.3f}")


#: The whole-history pass keyed by ``k32`` where set, and for the unkeyed rows by the
#: dictionary's key or, for users not in it yet, a negative number given at query time.
_MAPPED = """
WITH p AS (SELECT DISTINCT user_id FROM rollup_user_days WHERE project_id = 'bench' AND k32 IS NULL),
m AS (SELECT p.user_id, coalesce(u.k, -(row_number() OVER ())::INTEGER) AS k
      FROM p LEFT JOIN user_keys u USING (user_id)),
kd AS (
  SELECT 'bench' AS project_id, k32 AS k, day FROM rollup_user_days
  WHERE project_id = 'bench' AND k32 IS NOT NULL
  UNION ALL
  SELECT 'bench', m.k, d.day FROM rollup_user_days d JOIN m USING (user_id)
  WHERE d.project_id = 'bench' AND d.k32 IS NULL)
"""


def _lazy_keying(
    con: duckdb.DuckDBPyConnection, whole_history: str, pending_days: int, runs: int
) -> dict[str, float]:
    (last,) = con.execute("SELECT max(day) FROM rollup_user_days").fetchone() or (None,)
    con.execute(
        f"UPDATE rollup_user_days SET k32 = NULL WHERE day > DATE '{last}' - {pending_days}"
    )
    con.execute(
        "DELETE FROM user_keys WHERE user_id NOT IN (SELECT user_id FROM rollup_user_days"
        " WHERE k32 IS NOT NULL)"
    )
    con.execute("CHECKPOINT")
    ((pending, new_users, known),) = con.execute(
        "SELECT count(*), count(DISTINCT user_id) FILTER (WHERE user_id NOT IN"
        " (SELECT user_id FROM user_keys)), (SELECT count(*) FROM user_keys)"
        " FROM rollup_user_days WHERE k32 IS NULL"
    ).fetchall()
    print(f"lazy keying: {pending:,} unkeyed user days, {new_users:,} users not in the"
          f" dictionary of {known:,}")  # fmt: skip
    forms = {
        "whole history by user_id (string)": whole_history.format(k="user_id"),
        "whole history by k32, unkeyed rows mapped at query time": _MAPPED
        + whole_history.format(k="k").replace("FROM rollup_user_days", "FROM kd"),
    }
    walls: dict[str, list[float]] = {name: [] for name in forms}
    found = set()
    for _ in range(runs):
        for name, sql in forms.items():
            t = time.perf_counter()
            found.add(tuple(con.execute(sql).fetchall()))
            walls[name].append(time.perf_counter() - t)
    assert len(found) == 1, found
    t = time.perf_counter()
    con.execute("BEGIN")
    con.execute(
        "INSERT INTO user_keys SELECT user_id, (SELECT max(k) FROM user_keys)"
        " + (row_number() OVER ())::INTEGER FROM (SELECT DISTINCT user_id FROM rollup_user_days"
        " WHERE k32 IS NULL AND user_id NOT IN (SELECT user_id FROM user_keys))"
    )
    con.execute(
        "UPDATE rollup_user_days SET k32 = u.k FROM user_keys u"
        " WHERE rollup_user_days.k32 IS NULL AND u.user_id = rollup_user_days.user_id"
    )
    con.execute("COMMIT")
    keying = time.perf_counter() - t
    ((left,),) = con.execute("SELECT count(*) FROM rollup_user_days WHERE k32 IS NULL").fetchall()
    assert left == 0
    keyed = []
    for _ in range(runs):
        t = time.perf_counter()
        found.add(tuple(con.execute(whole_history.format(k="k32")).fetchall()))
        keyed.append(time.perf_counter() - t)
    assert len(found) == 1, found
    return {
        **{name: statistics.median(w) for name, w in walls.items()},
        "whole history by k32, all keyed again": statistics.median(keyed),
        "one keying pass (dictionary insert + keys set), one run": keying,
    }


if __name__ == "__main__":
    main()
