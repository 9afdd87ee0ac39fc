"""What a DuckDB checkpoint costs after steady appends of bench events (the loader's stall).

    python benchmarks/bench_checkpoint.py [--rows-per-commit 25000] [--commits 10] [--reps 4]
                                          [--all-tables] [--varied SEED]

A store (``DuckDBStore``, automatic checkpoints off for the run) receives ``--commits``
transactions of ``--rows-per-commit`` validated bench events each (the events table only, or with
``--all-tables`` through ``append_events``: rollups and kept sessions too; with ``--varied`` the
commits get random sizes of 5,000-25,000 rows summing to the same total), then one ``CHECKPOINT``
is timed; repeated ``--reps`` times on the growing store. Prints the WAL size before and the
checkpoint's seconds per repetition. Exploratory: it measures DuckDB, not a target, and each
figure is one run (see RESULTS.md, "Checkpoint stalls").
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from events import EVENT  # noqa: E402

import avila.storage.duckdb.store as duckdb_store  # noqa: E402
from avila.ingest.validation import validate_events  # noqa: E402


def _events(first: int, n: int) -> pa.Table:
    raws = [
        EVENT.replace(b"@ID@", f"c{first + i}".encode()).replace(
            b"@U@", str((first + i) % 5000).encode()
        )
        for i in range(n)
    ]
    rows, _ = validate_events(raws, "bench")
    return rows.to_arrow()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows-per-commit", type=int, default=25_000)
    parser.add_argument("--commits", type=int, default=10)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--all-tables", action="store_true")
    parser.add_argument("--varied", type=int, metavar="SEED")
    args = parser.parse_args()
    total = args.rows_per_commit * args.commits
    if args.varied is None:
        sizes = [args.rows_per_commit] * args.commits
    else:
        rnd = random.Random(args.varied)
        sizes = []
        while sum(sizes) < total:
            sizes.append(min(rnd.randrange(5_000, 25_001, 100), total - sum(sizes)))
    first = 0
    tables = []
    for size in sizes:
        tables.append(_events(first, size))
        first += size
    duckdb_store.CHECKPOINT_THRESHOLD = "100GB"  # this run checkpoints by hand
    with tempfile.TemporaryDirectory(prefix="avila-bench-") as tmp:
        path = Path(tmp) / "store.duckdb"
        store = duckdb_store.DuckDBStore(path)
        conn = store._conn
        wal = Path(f"{path}.wal")
        for rep in range(args.reps):
            started = time.perf_counter()
            for table in tables:
                if args.all_tables:
                    store.append_events(table)
                else:
                    cursor = conn.cursor()
                    cursor.execute("BEGIN")
                    cursor.from_arrow(table).insert_into("events")
                    cursor.execute("COMMIT")
            appended = time.perf_counter() - started
            wal_mb = wal.stat().st_size / 1e6 if wal.exists() else 0.0
            started = time.perf_counter()
            conn.execute("CHECKPOINT")
            checkpoint = time.perf_counter() - started
            print(
                f"rep {rep}: {len(tables)} commits, {total:,} rows in {appended:.2f} s;"
                f" WAL {wal_mb:.0f} MB; checkpoint {checkpoint:.3f} s;"
                f" file {os.path.getsize(path) / 1e6:.0f} MB"
            )
        store.close()


if __name__ == "__main__":
    main()
