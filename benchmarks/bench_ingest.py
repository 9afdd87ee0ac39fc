"""Ingest benchmark: a real server process under load, beside a store-only baseline.

    python benchmarks/bench_ingest.py [--seconds 10] [--rounds 3]

Prints, per round: batch ingest events/s (100 events/request, 16 connections, every request
acknowledged only after the group commit is durable), single-event p50/p99 at a fixed
1,000 requests/s, and the store-only baseline (Arrow appends of the same events straight into
DuckDB, one transaction per 5,000 events, in this process). Reports medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
from events import EVENT, batch_body, single_body  # noqa: E402

from avila.ingest.validation import validate_events  # noqa: E402
from avila.storage.duckdb.store import DuckDBStore  # noqa: E402
from avila.testing import ServerProcess  # noqa: E402

KEY = "bench-key"
EXTRA_ENV: dict[str, str] = {}


def store_baseline(tmp: Path, total_events: int = 400_000, per_commit: int = 5000) -> float:
    store = DuckDBStore(tmp / "baseline.duckdb")
    tables = []
    for c in range(total_events // per_commit):
        raws = [
            EVENT.replace(b"@ID@", f"b{c}-{i}".encode()).replace(b"@U@", b"1")
            for i in range(per_commit)
        ]
        rows, _ = validate_events(raws, "bench")
        tables.append(rows.to_arrow())
    started = time.perf_counter()
    for table in tables:
        store.append_events(table)
    elapsed = time.perf_counter() - started
    store.close()
    return total_events / elapsed


def run_round(tmp: Path, seconds: float) -> dict[str, float]:
    data = tmp / f"server-{uuid.uuid4().hex[:6]}"
    env = {"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning", **EXTRA_ENV}
    with ServerProcess(data, env=env) as server:
        run_id = uuid.uuid4().hex[:8]

        def batch_request(i: int) -> bytes:
            return loadgen.build_request(
                "127.0.0.1",
                server.port,
                "/api/v1/events/batch",
                KEY,
                batch_body(f"{run_id}-{i}", 100),
            )

        def single_request(i: int) -> bytes:
            return loadgen.build_request(
                "127.0.0.1", server.port, "/api/v1/events", KEY, single_body(f"s{run_id}-{i}")
            )

        batch = asyncio.run(
            loadgen.closed_loop("127.0.0.1", server.port, 16, seconds, batch_request)
        )
        single = asyncio.run(
            loadgen.open_loop("127.0.0.1", server.port, 1000, seconds, 32, single_request)
        )
    ok_batches = batch.statuses.get(202, 0)
    return {
        "batch_events_per_s": ok_batches * 100 / batch.seconds,
        "batch_p99_ms": batch.percentile(0.99) * 1000,
        "batch_non_202": batch.requests - ok_batches,
        "single_p50_ms": single.percentile(0.50) * 1000,
        "single_p99_ms": single.percentile(0.99) * 1000,
        "single_non_202": single.requests - single.statuses.get(202, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--env", action="append", default=[], help="extra server setting NAME=VALUE"
    )
    args = parser.parse_args()
    EXTRA_ENV.update(item.split("=", 1) for item in args.env)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="avila-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for r in range(args.rounds):
            figures = run_round(tmp, args.seconds)
            figures["store_only_events_per_s"] = store_baseline(tmp / f"r{r}")
            figures["ratio_e2e_to_store"] = (
                figures["batch_events_per_s"] / figures["store_only_events_per_s"]
            )
            rounds.append(figures)
            print(
                f"round {r + 1}: " + ", ".join(f"{k}={v:,.2f}" for k, v in figures.items()),
                flush=True,
            )
    medians = {k: statistics.median(f[k] for f in rounds) for k in rounds[0]}
    print("median: " + ", ".join(f"{k}={v:,.2f}" for k, v in medians.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "median": medians}, indent=2))


if __name__ == "__main__":
    main()
