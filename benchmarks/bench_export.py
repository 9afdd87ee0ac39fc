"""Export benchmark: peak memory of streaming a 10-million-event export to Parquet and CSV.

    python benchmarks/bench_export.py [--rows 10000000] [--formats parquet,csv] [--no-write]

1. Builds a store of ``--rows`` realistic events quickly: Arrow columns made with numpy (ids,
   users, types, urls, JSON payloads drawn from small pools) appended with
   ``DuckDBStore.append_events`` in 1M-row transactions. Reused between runs (``--dir``).
2. For each format, a fresh child process opens the store directly (as ``avila export`` does
   without ``--url``) and streams the whole export to a file. The child reports its peak RSS
   (``VmHWM`` in /proc/self/status), its RSS before the export started, the time, the
   rows and the file size. The target is about 200 MB of RSS, independent of the row count.

Writes the figures to benchmarks/RESULTS.md (section ``export``) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from avila.cli import ONE_SHOT_ARROW_POOL  # noqa: E402

CHUNK_ROWS = 1_000_000
BASE_US = 1_764_151_200_000_000  # 2025-11-26T10:00:00Z


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def generate(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from avila.storage.duckdb.store import DuckDBStore
    from avila.storage.schema import EVENT_SCHEMA

    rng = np.random.default_rng(42)
    types = pa.array(["page_view", "click", "product_view", "add_to_cart", "purchase", "custom"])
    urls = pa.array([f"/products/{i}" for i in range(500)] + ["/", "/cart", "/checkout"])
    titles = pa.array(["Produto ☕ São Paulo", "Home", "Cart", None])
    cities = pa.array(["São Paulo", "Rio de Janeiro", "Lisboa", "東京", None])
    browsers = pa.array(["Chrome", "Safari", "Firefox", "Edge"])
    data = pa.array(
        [
            json.dumps({"url": f"/products/{i}", "title": "Produto", "duration_ms": 5000})
            for i in range(50)
        ]
    )
    context = pa.array(
        [
            json.dumps(
                {
                    "device": {"device_type": "Desktop", "os": "Windows", "browser": b},
                    "location": {"country": "BR", "city": "São Paulo"},
                    "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120",
                },
                ensure_ascii=False,
            )
            for b in ("Chrome", "Safari", "Firefox", "Edge")
        ]
    )
    store = DuckDBStore(path)
    try:
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            ids = pa.array(np.arange(start, start + n)).cast(pa.string())
            users = pa.array(rng.integers(0, 200_000, n)).cast(pa.string())

            def pick(pool: pa.Array, n: int = n) -> pa.Array:
                return pc.take(pool, pa.array(rng.integers(0, len(pool), n)))

            ts = BASE_US + start * 50_000 + np.arange(n, dtype=np.int64) * 50_000
            revenue = np.where(rng.random(n) < 0.05, rng.random(n) * 500, np.nan)
            columns = {
                "project_id": pa.array(["default"] * n),
                "event_id": pc.binary_join_element_wise("evt-", ids, ""),
                "user_id": pc.binary_join_element_wise("user-", users, ""),
                "session_id": pc.binary_join_element_wise("sess-", users, ""),
                "ts": pa.array(ts).cast(pa.timestamp("us")),
                "received_at": pa.array(ts + 1000).cast(pa.timestamp("us")),
                "event_type": pick(types),
                "url": pick(urls),
                "title": pick(titles),
                "revenue": pa.array(revenue, from_pandas=True),
                "quantity": pa.array(rng.integers(1, 5, n)),
                "price": pa.array(rng.random(n) * 100),
                "browser": pick(browsers),
                "city": pick(cities),
                "data": pick(data),
                "metadata": pa.array(['{"app_version":"1.4.2"}'] * n),
                "context": pick(context),
            }
            arrays = [
                columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type)
                for f in EVENT_SCHEMA
            ]
            store.append_events(pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA))
            print(f"  generated {start + n:,} rows", file=sys.stderr)
    finally:
        store.close()


def export_child(store_path: Path, fmt: str, out: Path) -> None:
    """Runs in a fresh process: export everything, print figures as JSON."""
    from avila.export.query import ExportRequest
    from avila.export.stream import open_export, tune_for_one_export
    from avila.storage.duckdb.store import DuckDBStore

    store = DuckDBStore(store_path, read_only=True)
    tune_for_one_export(store)  # as `avila export` does
    rss_start = _status_mb("VmRSS")
    started = time.perf_counter()
    stream = open_export(store, "default", ExportRequest(format=fmt))  # type: ignore[arg-type]
    with open(out, "wb") as f:
        for chunk in stream:
            f.write(chunk)
    seconds = time.perf_counter() - started
    store.close()
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec from the parent
    # (here the generator), while VmHWM belongs to this process's own memory map.
    peak = _status_mb("VmHWM")
    result = {
        "format": fmt,
        "rows": stream.rows,
        "seconds": seconds,
        "bytes": out.stat().st_size,
        "rss_start_mb": rss_start,
        "peak_rss_mb": peak,
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--formats", default="parquet,csv")
    parser.add_argument("--dir", type=Path, help="work directory (store kept for reruns)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--child", nargs=3, metavar=("STORE", "FORMAT", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        export_child(Path(args.child[0]), args.child[1], Path(args.child[2]))
        return

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    store_path = work / f"events-{args.rows}.duckdb"
    if not store_path.exists():
        started = time.perf_counter()
        generate(store_path, args.rows)
        print(
            f"store of {args.rows:,} rows built in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    results = []
    for fmt in args.formats.split(","):
        out = work / f"export.{fmt}"
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(store_path), fmt, str(out)],
            check=True,
            capture_output=True,
            text=True,
            # The allocator `avila export` picks (avila.cli.ONE_SHOT_ARROW_POOL).
            env={**os.environ, "ARROW_DEFAULT_MEMORY_POOL": ONE_SHOT_ARROW_POOL},
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        results.append(result)
        out.unlink()
        print(
            f"{fmt:8} {result['rows']:>11,} rows  {result['seconds']:6.1f} s  "
            f"{result['rows'] / result['seconds']:>9,.0f} rows/s  "
            f"{result['bytes'] / 2**20:8.0f} MiB  peak RSS {result['peak_rss_mb']:.0f} MB "
            f"(at start {result['rss_start_mb']:.0f} MB)"
        )
    if not args.no_write:
        from results import stamp, write_section

        lines = [
            "## Export (`benchmarks/bench_export.py`)",
            "",
            stamp(),
            "",
            "Whole-store export streamed to a file by a fresh process with the store opened "
            "directly (like `avila export` without `--url`); peak RSS is the process's VmHWM.",
            "",
            "| format | rows | seconds | rows/s | file MiB | peak RSS MB | RSS at start MB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results:
            lines.append(
                f"| {r['format']} | {r['rows']:,} | {r['seconds']:.1f} | "
                f"{r['rows'] / r['seconds']:,.0f} | {r['bytes'] / 2**20:.0f} | "
                f"{r['peak_rss_mb']:.0f} | {r['rss_start_mb']:.0f} |"
            )
        write_section("export", "\n".join(lines))


if __name__ == "__main__":
    main()
