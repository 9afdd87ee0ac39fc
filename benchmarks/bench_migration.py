"""Upgrade cost of schema migration 12 (kept sessions) on a bench store.

    .venv/bin/python benchmarks/bench_migration.py /work/benchdata/analytics_10000000.duckdb

Copies the store (made by ``bench_analytics.py``) next to itself, takes its kept-session
tables and its version-12 row away, opens the copy as the server would (the migration builds
the tables from the stored events, logging each pass), and prints the wall and CPU seconds
and the peak memory of this process. The copy is deleted afterwards.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import time
from pathlib import Path

import duckdb

from avila.storage.duckdb.store import DuckDBStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a bench_analytics.py DuckDB file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    copy = args.store.with_name(args.store.stem + "-migration.duckdb")
    shutil.copy(args.store, copy)
    try:
        conn = duckdb.connect(str(copy))
        conn.execute("DROP TABLE kept_sessions")
        conn.execute("DROP TABLE kept_keyed_sessions")
        conn.execute("DROP TABLE IF EXISTS kept_pending")
        conn.execute("DELETE FROM schema_version WHERE version >= 12")
        conn.execute("CHECKPOINT")
        conn.close()
        wall, cpu = time.perf_counter(), time.process_time()
        store = DuckDBStore(copy)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        ((sessions,),) = store.query("SELECT count(*) FROM kept_sessions")
        store.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(
            f"migration 12 on {args.store.name}: {wall:.1f} s wall, {cpu:.1f} CPU-s,"
            f" peak RSS {peak:.2f} GB, {sessions:,} sessions"
        )
    finally:
        for path in (copy, copy.with_name(copy.name + ".wal")):
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
