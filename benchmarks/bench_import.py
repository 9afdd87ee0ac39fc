"""Bulk import speed: ``avila import`` of Parquet, CSV and NDJSON files into a fresh store.

Protocol (fixed before the runs): one generated file per format with the same ``--rows`` events
(export-shaped columns for Parquet and CSV, the API's event JSON for NDJSON; seven event types
with valid payloads, unicode, 0.5 % duplicate event ids within the file and 0.1 % invalid rows;
payloads drawn from 10,000 pages/products and 1,000,000 orders, contexts from 4,000 distinct
device/browser/city/user-agent combinations, 200,000 users).
Each round imports every format once with every implementation (``--impl LABEL=SRC``: the
source tree put on PYTHONPATH; default this tree), interleaved, each into an empty data
directory, with the real command (``python -m avila.cli import FILE -q``) in a child process.
Reported: wall rows/s and rows per CPU second of the child (user + system, all threads), median
of ``--runs`` rounds, the load average before each import, and the stored row count checked
against the expected one. With ``--data-dir`` the generated files are kept there and reused by
later runs (stores are always deleted); without it everything lives in a temporary directory
that is deleted at the end.

    python benchmarks/bench_import.py --rows 10000000 --runs 3 --data-dir /work/benchdata/i13-import
    python benchmarks/bench_import.py --rows 1000000 --runs 3 --impl old=/tmp/old/src --impl new=src
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import stamp, write_section  # noqa: E402

CHUNK = 500_000
BASE_US = 1_764_000_000_000_000  # 2025-11-24
DUPLICATE_SHARE = 0.005
INVALID_SHARE = 0.001

_TYPES = ["page_view", "click", "product_view", "add_to_cart", "purchase", "custom", "login"]


def _payloads() -> dict[str, list[str]]:
    def dumps(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    return {
        "page_view": [dumps({"url": f"/products/{i}", "title": f"Produto {i} ☕ São Paulo"}) for i in range(10_000)],
        "click": [dumps({"url": f"/p/{i}", "element_id": "buy"}) for i in range(1_000)],
        "product_view": [dumps({"product_id": f"sku-{i}", "price": 19.9 + i}) for i in range(10_000)],
        "add_to_cart": [dumps({"product_id": f"sku-{i}", "quantity": 1 + i % 3, "price": 9.5}) for i in range(10_000)],
        "purchase": [dumps({"order_id": f"o-{i}", "revenue": 120.5 + i % 997, "currency": "BRL"}) for i in range(1_000_000)],
        "custom": [dumps({"name": "plan_chosen", "properties": {"plan": "pró", "seats": i}}) for i in range(100)],
        "login": ["{}"],
    }  # fmt: skip


# 4 devices x 5 browsers x 20 cities x 10 user agents = 4,000 distinct contexts.
_CONTEXTS = [
    json.dumps(
        {
            "device": {"device_type": device, "os": "Windows", "browser": browser},
            "location": {"country": "BR", "city": f"{city} {n}"},
            "user_agent": f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/{120 + agent}",
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    for device in ("Desktop", "Mobile", "Tablet", "TV")
    for browser in ("Chrome", "Safari", "Firefox", "Edge", "Opera")
    for n, city in enumerate(["São Paulo", "東京", "Lisboa", "Kraków"] * 5)
    for agent in range(10)
]


_PAYLOADS = _payloads()


def _chunk(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    """``n`` export-shaped rows; some ids repeat earlier ones, some rows are invalid."""
    payloads = _PAYLOADS
    kinds = rng.integers(0, len(_TYPES), n)
    picks = rng.integers(0, 1 << 40, n)
    data = [
        payloads[_TYPES[k]][p % len(payloads[_TYPES[k]])]
        for p, k in zip(picks, kinds, strict=False)
    ]
    ids = np.arange(start, start + n)
    repeat = rng.random(n) < DUPLICATE_SHARE
    ids[repeat] = rng.integers(0, max(1, start + 1), int(repeat.sum()))
    users = rng.integers(0, 200_000, n)
    user_ids = [f"user-{u}" for u in users]
    invalid = np.flatnonzero(rng.random(n) < INVALID_SHARE)
    for at in invalid:
        user_ids[at] = ""  # min_length 1: rejected at user_id
    ts = BASE_US + (start + np.arange(n, dtype=np.int64)) * 50_000
    return pa.table(
        {
            "event_id": pa.array([f"evt-{i}" for i in ids]),
            "user_id": pa.array(user_ids),
            "session_id": pa.array([f"sess-{u}" for u in users]),
            "timestamp": pa.array(ts).cast(pa.timestamp("us", "UTC")),
            "event_type": pa.array([_TYPES[k] for k in kinds]),
            "data": pa.array(data),
            "metadata": pa.array(['{"app_version":"1.4.2"}'] * n),
            "context": pa.array(
                [_CONTEXTS[i % len(_CONTEXTS)] for i in rng.integers(0, 1 << 40, n)]
            ),
        }
    )


def generate(directory: Path, rows: int) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    paths = {
        "parquet": directory / "events.parquet",
        "csv": directory / "events.csv",
        "ndjson": directory / "events.ndjson",
    }
    writer = None
    csv_writer = None
    with open(paths["ndjson"], "wb") as ndjson:
        for start in range(0, rows, CHUNK):
            table = _chunk(start, min(CHUNK, rows - start), rng)
            if writer is None:
                writer = pq.ParquetWriter(paths["parquet"], table.schema, compression="snappy")
            writer.write_table(table, row_group_size=16_384)
            text_ts = pc.strftime(table["timestamp"], "%Y-%m-%dT%H:%M:%SZ")  # type: ignore[attr-defined]
            csv_table = table.set_column(3, "timestamp", text_ts)
            if csv_writer is None:
                csv_writer = pa_csv.CSVWriter(paths["csv"], csv_table.schema)
            csv_writer.write_table(csv_table)
            pascal = pc.take(
                pa.array(list(_PASCAL.values())),
                pc.index_in(table["event_type"], value_set=pa.array(list(_PASCAL))),
            )
            # Ids, user ids and times are plain ASCII: the event JSON is glued from columns.
            lines = pc.binary_join_element_wise(
                '{"event_id":"', table["event_id"],
                '","user_id":"', table["user_id"],
                '","session_id":"', table["session_id"],
                '","timestamp":"', text_ts,
                '","event_type":{"type":"', pascal,
                '","data":', table["data"],
                '},"metadata":', table["metadata"],
                ',"context":', table["context"],
                "}\n", "",
            )  # fmt: skip
            glued = pa.ListArray.from_arrays(
                pa.array([0, len(lines)], pa.int32()), lines.combine_chunks()
            )
            ndjson.write(pc.binary_join(glued, "")[0].as_buffer())
            print(f"  generated {start + len(table):,} rows", file=sys.stderr)
    assert writer is not None and csv_writer is not None
    writer.close()
    csv_writer.close()
    return paths


_PASCAL = {
    "page_view": "PageView",
    "click": "Click",
    "product_view": "ProductView",
    "add_to_cart": "AddToCart",
    "purchase": "Purchase",
    "custom": "Custom",
    "login": "Login",
}


def expected_rows(path: Path) -> int:
    """Valid rows with a first-seen event id: what an empty store must hold after import."""
    table = pq.read_table(path, columns=["event_id", "user_id"])
    valid = table.filter(pc.greater(pc.utf8_length(table["user_id"]), 0))
    return len(pc.unique(valid["event_id"]))


def import_once(path: Path, data_dir: Path, src: Path) -> tuple[float, float, int]:
    """(wall s, child CPU s, stored rows) of one ``avila import`` with the code in ``src``."""
    env = dict(os.environ, AVILA_DATA_DIR=str(data_dir), PYTHONPATH=str(src))
    env.pop("AVILA_STORAGE_URL", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "avila.cli", "import", str(path), "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"import failed: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    import duckdb

    with duckdb.connect(str(data_dir / "avila.duckdb"), read_only=True) as conn:
        stored = int(conn.execute("SELECT count(*) FROM events").fetchall()[0][0])
    print(
        f"    {path.suffix[1:]:8s} {src}: {wall:7.2f} s wall {cpu:7.2f} s CPU"
        f"  {done.stderr.strip().splitlines()[0]}",
        file=sys.stderr,
    )
    return wall, cpu, stored


def inputs(directory: Path, rows: int) -> dict[str, Path]:
    """The generated files for ``rows`` in ``directory`` (generated when missing)."""
    here = directory / f"rows-{rows}"
    paths = {fmt: here / f"events.{fmt}" for fmt in ("parquet", "csv", "ndjson")}
    if all(path.exists() for path in paths.values()):
        return paths
    here.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="generating-", dir=here))
    made = generate(partial, rows)
    for fmt, path in made.items():
        path.rename(paths[fmt])
    partial.rmdir()
    return paths


SRC = Path(__file__).resolve().parent.parent / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (deleted)")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep generated files here")
    parser.add_argument("--formats", default="parquet,csv,ndjson")
    parser.add_argument(
        "--impl",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="an implementation to run: label and source directory (default: this tree's src)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    impls = dict(item.split("=", 1) for item in args.impl) or {"this tree": str(SRC)}
    for given in (args.data_dir, args.dir):
        if given is not None:
            given.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="avila-bench-import-", dir=args.data_dir or args.dir))
    formats = args.formats.split(",")
    try:
        paths = inputs(args.data_dir, args.rows) if args.data_dir else generate(scratch, args.rows)
        sizes = {fmt: paths[fmt].stat().st_size for fmt in formats}
        expected = expected_rows(paths["parquet"])
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {
            (fmt, label): [] for fmt in formats for label in impls
        }
        for run in range(args.runs):
            print(f"  round {run + 1}", file=sys.stderr)
            for fmt in formats:
                for label, src in impls.items():
                    data_dir = scratch / f"store-{fmt}-{run}"
                    load = os.getloadavg()[0]
                    wall, cpu, stored = import_once(paths[fmt], data_dir, Path(src).resolve())
                    shutil.rmtree(data_dir)
                    if stored != expected:
                        raise SystemExit(f"{fmt} ({label}): stored {stored}, expected {expected}")
                    results[(fmt, label)].append((wall, cpu, load))
            # After every round, so a run cut short still leaves its figures.
            report(args, formats, list(impls), sizes, expected, results, run + 1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(
    args: argparse.Namespace,
    formats: list[str],
    labels: list[str],
    sizes: dict[str, int],
    expected: int,
    results: dict[tuple[str, str], list[tuple[float, float, float]]],
    rounds: int,
) -> None:
    loads = [load for runs in results.values() for _, _, load in runs]
    lines = [
        f"{args.rows:,} rows per file ({DUPLICATE_SHARE:.1%} repeated ids, {INVALID_SHARE:.1%}"
        f" invalid rows; {expected:,} stored), {rounds} of {args.runs} rounds done, formats"
        f" and implementations interleaved; load average before the imports"
        f" {min(loads):.1f}-{max(loads):.1f}",
        "",
        "| format | code | file (MB) | rows/s wall (median) | rows per CPU-second (median)"
        " | wall s per round | CPU s per round |",
        "|---|---|---|---|---|---|---|",
    ]
    for fmt in formats:
        for label in labels:
            runs = results[(fmt, label)]
            walls = [w for w, _, _ in runs]
            cpus = [c for _, c, _ in runs]
            lines.append(
                f"| {fmt} | {label} | {sizes[fmt] / 1e6:,.0f}"
                f" | **{args.rows / statistics.median(walls):,.0f}**"
                f" | {args.rows / statistics.median(cpus):,.0f}"
                f" | {', '.join(f'{w:.1f}' for w in walls)}"
                f" | {', '.join(f'{c:.1f}' for c in cpus)} |"
            )
    if len(labels) == 2:
        first, second = labels
        lines += ["", f"Ratio {second} / {first} (medians):", ""]
        for fmt in formats:
            a, b = results[(fmt, first)], results[(fmt, second)]
            wall = statistics.median(w for w, _, _ in a) / statistics.median(w for w, _, _ in b)
            cpu = statistics.median(c for _, c, _ in a) / statistics.median(c for _, c, _ in b)
            lines.append(f"- {fmt}: {wall:.1f}x rows/s wall, {cpu:.1f}x rows per CPU-second")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        command = f"--rows {args.rows} --runs {args.runs} --formats {args.formats}"
        command += "".join(f" --impl {label}=..." for label in labels if args.impl)
        write_section(
            "bench_import",
            f"## Bulk import (`python benchmarks/bench_import.py {command}`)\n\n{stamp()}\n"
            "Machine: 2 cores, shared with other helpers' tests and benchmarks (load average"
            f" {min(loads):.1f}-{max(loads):.1f} before the imports). `avila import FILE` in"
            " direct mode into an empty store; wall time includes process start and the final"
            " dedup, rollups and commit. Rows per CPU-second counts the import process's user +"
            " system time on all its threads (the load inflates it less than wall time).\n\n"
            + table,
        )


if __name__ == "__main__":
    main()
