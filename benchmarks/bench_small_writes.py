"""Small loader rounds on a store with history: what each costs the store process.

    .venv/bin/python benchmarks/bench_small_writes.py /work/benchdata/analytics_10000000.duckdb

At a trickle the loader commits up to ten small rounds a second, and every round pays the
upkeep of the rollups and the kept sessions on top of the events' own insert. This copies a
``bench_analytics.py`` store (its history: months of events, hundreds of thousands of users)
and commits rounds through the loader's own entry point (``commit_log_batch``) on the copy:

- ``--rounds`` rounds of 1 event, then as many of 20 events (the protocol, fixed: users drawn
  from the store's users, 95 % of events after everything stored (live traffic), 5 % late:
  anywhere in the stored range's last 30 days; no client session ids, as in the bench data);
- then the default sessions question over the last 30 days, read twice: the first read
  includes whatever upkeep the writes left for it, the second is the plain read.

It prints the median and the 90th percentile of each round's wall time and its mean CPU time
(this process: the store's work), and both reads. The copy is deleted afterwards.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from avila.analytics.sessions import sessions
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.schema import EVENT_SCHEMA

PROJECT = "bench"
LATE_SHARE = 0.05


def _round(rng: random.Random, users: list[str], size: int, now: float, late_from: float,
           serial: int) -> pa.Table:  # fmt: skip
    rows: dict[str, list[object]] = {name: [] for name in EVENT_SCHEMA.names}
    for i in range(size):
        late = rng.random() < LATE_SHARE
        at = rng.uniform(late_from, now) if late else now + i * 0.001
        values = {
            "project_id": PROJECT,
            "event_id": f"small-{serial}-{i}",
            "user_id": rng.choice(users),
            "ts": int(at * 1e6),
            "received_at": int(now * 1e6),
            "event_type": rng.choice(["page_view", "page_view", "click", "add_to_cart"]),
            "url": "/products/42",
            "device_type": "Desktop",
            "country": "BR",
        }
        for name in rows:
            rows[name].append(values.get(name))
    return pa.table(rows, schema=EVENT_SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a bench_analytics.py DuckDB file")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of each size")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    copy = args.store.with_name(args.store.stem + "-small-writes.duckdb")
    shutil.copy(args.store, copy)
    rng = random.Random(args.seed)
    try:
        store = DuckDBStore(copy)
        ((last,),) = store.query("SELECT max(ts) FROM events WHERE project_id = ?", [PROJECT])
        users = [
            row[0]
            for row in store.query(
                "SELECT DISTINCT user_id FROM events WHERE project_id = ? AND ts >= ? ORDER BY 1",
                [PROJECT, last - timedelta(days=7)],
            )
        ]
        now = (last - datetime(1970, 1, 1)).total_seconds() + 60  # (naive UTC in the store)
        late_from = now - 30 * 86_400
        position = store.log_position()
        serial = 0
        for size in (1, 20):
            walls, cpus = [], []
            for _ in range(args.rounds):
                table = _round(rng, users, size, now, late_from, serial)
                serial += 1
                now += 0.1
                wall, cpu = time.perf_counter(), time.process_time()
                position += 1
                store.commit_log_batch(position, events=table)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            walls.sort()
            print(
                f"rounds of {size:>2} event(s) x {args.rounds}: median"
                f" {statistics.median(walls) * 1e3:.1f} ms, p90"
                f" {walls[int(len(walls) * 0.9)] * 1e3:.1f} ms, CPU"
                f" {statistics.fmean(cpus) * 1e3:.1f} ms/round"
            )
        end = last + timedelta(days=1)
        query = {
            "start_time": (end - timedelta(days=30)).isoformat(),
            "end_time": end.isoformat(),
        }
        for label in ("first read (with any upkeep left)", "second read"):
            wall = time.perf_counter()
            got = sessions(store, PROJECT, query)
            print(f"sessions, 30 d, {label}: {time.perf_counter() - wall:.3f} s"
                  f" ({got['sessions']:,} sessions)")  # fmt: skip
        store.close()
    finally:
        for path in (copy, copy.with_name(copy.name + ".wal")):
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
