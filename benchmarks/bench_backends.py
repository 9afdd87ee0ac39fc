"""DuckDB vs ClickHouse (embedded chdb) in one run: ingest, then the analytics queries.

    .venv/bin/python benchmarks/bench_backends.py                  # 10 M events, 3 rounds
    .venv/bin/python benchmarks/bench_backends.py --events 1000000 --runs 5

Ingest: the events of ``benchmarks/bench_analytics.py``'s generator (imported, same seed) are
made in 100k-row Arrow blocks; each block is appended with ``Store.append_events`` to both
stores, the order alternating per block (interleaved), so both see the same load. Reported:
the median block time and rows/s, and the total. Queries: our analytics functions (the rows
of bench_analytics) on both stores, interleaved per round, one warm-up each; the median wall
time and the median CPU time (this process: both engines run their threads in it) of
``--runs`` rounds, and the ClickHouse/DuckDB ratio. Files go to a temporary directory that is
deleted at the end. The machine is shared: read the CPU column beside the wall column.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_analytics import END, PROJECT, Q_END, Q_START, STEPS, generate  # noqa: E402

from avila.analytics import (  # noqa: E402
    funnel,
    lifecycle,
    overview,
    paths,
    realtime,
    retention,
    rfm,
    sessions,
    stickiness,
    trends,
)
from avila.storage import open_store  # noqa: E402
from avila.storage.base import Store  # noqa: E402

BLOCK_ROWS = 100_000


class _Tee:
    """Receives the generator's blocks and appends each to every store, timing each append."""

    def __init__(self, stores: dict[str, Store]) -> None:
        self.stores = stores
        self.times: dict[str, list[float]] = {name: [] for name in stores}
        self.blocks = 0

    def append_events(self, table: pa.Table) -> None:
        names = list(self.stores)
        if self.blocks % 2:
            names.reverse()
        for name in names:
            t0 = time.perf_counter()
            self.stores[name].append_events(table)
            self.times[name].append(time.perf_counter() - t0)
        self.blocks += 1


def cases() -> list[tuple[str, Callable[[Store], Any]]]:
    d30 = {"start_time": Q_START, "end_time": Q_END}
    f = {"steps": STEPS, **d30}
    w12 = {"start_time": END - timedelta(weeks=12), "end_time": END}
    return [
        ("funnel ordered (30 d)", lambda s: funnel(s, PROJECT, f)),
        ("funnel strict_order", lambda s: funnel(s, PROJECT, {**f, "mode": "strict_order"})),
        ("funnel unordered", lambda s: funnel(s, PROJECT, {**f, "mode": "unordered"})),
        ("retention (12 weeks)", lambda s: retention(s, PROJECT, {**w12, "period": "week", "periods": 12})),
        ("overview (30 d)", lambda s: overview(s, PROJECT, d30)),
        ("trends (day, 30 d)", lambda s: trends(s, PROJECT, {**d30, "breakdown": "browser"})),
        ("sessions (30 d)", lambda s: sessions(s, PROJECT, d30)),
        ("rfm (365 d)", lambda s: rfm(s, PROJECT, {"reference_date": END})),
        ("realtime (15 min)", lambda s: realtime(s, PROJECT, {"now": END})),
        ("paths (5 steps, 30 d)", lambda s: paths(s, PROJECT, {**d30, "steps": 5})),
        ("lifecycle (week, 12 w)", lambda s: lifecycle(s, PROJECT, {**w12, "period": "week"})),
        ("stickiness (week, 30 d)", lambda s: stickiness(s, PROJECT, {**d30, "period": "week"})),
    ]  # fmt: skip


def measure(fn: Callable[[], Any]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (temporary)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-backends-", dir=args.dir))
    stores: dict[str, Store] = {
        "duckdb": open_store(f"duckdb:///{root / 'bench.duckdb'}"),
        "chdb": open_store(f"chdb://{root / 'chdb'}"),
    }
    try:
        tee = _Tee(stores)
        t0 = time.perf_counter()
        generate(tee, args.events, chunk=BLOCK_ROWS)  # type: ignore[arg-type]
        print(f"{args.events:,} events in {tee.blocks} blocks of {BLOCK_ROWS:,} rows"
              f" ({time.perf_counter() - t0:.0f} s with generation)")  # fmt: skip
        print(f"{'ingest':<24}{'median block (s)':>17}{'rows/s':>12}{'total (s)':>11}")
        for name, times in tee.times.items():
            med = statistics.median(times)
            print(f"{name:<24}{med:>17.3f}{BLOCK_ROWS / med:>12,.0f}{sum(times):>11.1f}")
        for name, store in stores.items():
            (n,) = store.query("SELECT count(*) FROM events")[0]
            assert int(n) == args.events, (name, n)
        header = f"{'query':<24}{'duckdb s':>9}{'chdb s':>9}{'ratio':>7}"
        print(header + f"{'duck cpu':>10}{'chdb cpu':>10}{'ratio':>7}")
        for label, fn in cases():
            wall: dict[str, list[float]] = {n: [] for n in stores}
            cpu: dict[str, list[float]] = {n: [] for n in stores}
            for store in stores.values():
                fn(store)  # warm-up
            for r in range(args.runs):
                order = list(stores) if r % 2 == 0 else list(reversed(stores))
                for name in order:
                    w, c = measure(lambda s=stores[name], f=fn: f(s))  # type: ignore[misc]
                    wall[name].append(w)
                    cpu[name].append(c)
            dw, cw = statistics.median(wall["duckdb"]), statistics.median(wall["chdb"])
            dc, cc = statistics.median(cpu["duckdb"]), statistics.median(cpu["chdb"])
            print(f"{label:<24}{dw:>9.3f}{cw:>9.3f}{cw / dw:>7.2f}{dc:>10.3f}{cc:>10.3f}"
                  f"{cc / dc:>7.2f}", flush=True)  # fmt: skip
    finally:
        for store in stores.values():
            store.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
