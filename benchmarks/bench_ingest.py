"""Ingest benchmark: a real server process under load, beside a store-only baseline.

    python benchmarks/bench_ingest.py [--seconds 10] [--rounds 3] [--no-write]

Per round, on a fresh server and data directory:
- batch: 100 events per request, 16 keep-alive connections in a closed loop; every 202 means
  the events were committed (fsync'd) by the group commit;
- single: one event per request at a fixed 1,000 requests/s (open loop; latency counted from
  each request's due time, so queueing is not hidden);
- store-only baseline: the same events appended straight into a DuckDB file from Arrow, one
  transaction per 5,000 events, in this process, no HTTP and no validation.
Reports per-round figures and medians, and writes them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
from events import EVENT, batch_template, single_body  # noqa: E402
from results import stamp, write_section  # noqa: E402

from avila.ingest.validation import validate_events  # noqa: E402
from avila.storage.duckdb.store import DuckDBStore  # noqa: E402
from avila.testing import ServerProcess  # noqa: E402

KEY = "bench-key"
BATCH = 100
CONNECTIONS = 16
SINGLE_RATE = 1000


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


def run_round(tmp: Path, seconds: float, extra_env: dict[str, str]) -> dict[str, float]:
    env = {"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning", **extra_env}
    with ServerProcess(tmp / f"server-{uuid.uuid4().hex[:6]}", env=env) as server:
        run_id = uuid.uuid4().hex[:8]
        host, port = "127.0.0.1", server.port
        marker = b"#" * 17
        template = loadgen.build_request(
            host, port, "/api/v1/events/batch", KEY, batch_template(BATCH, marker)
        )

        def batch_request(i: int) -> bytes:
            # The id prefix has the marker's length, so Content-Length stays right.
            return template.replace(marker, f"{run_id}{i:09d}".encode())

        def single_request(i: int) -> bytes:
            return loadgen.build_request(
                host, port, "/api/v1/events", KEY, single_body(f"s{run_id}-{i}")
            )

        # Warm up (imports, first commits, connections), then the single-event scenario on
        # the still-small store, then the batch scenario. (Run the other way round, the batch
        # phase leaves a WAL near the checkpoint threshold, and the checkpoint's stall lands
        # in the single-event phase; that stall is real, and visible in batch_p99_ms.)
        loadgen.run(loadgen.closed_loop(host, port, 4, 1.0, lambda i: batch_request(10**8 + i)))
        single = loadgen.run(
            loadgen.open_loop(host, port, SINGLE_RATE, seconds, 32, single_request)
        )
        batch = loadgen.run(loadgen.closed_loop(host, port, CONNECTIONS, seconds, batch_request))
    ok_batches = batch.statuses.get(202, 0)
    return {
        "batch_events_per_s": ok_batches * BATCH / batch.seconds,
        "batch_p50_ms": batch.percentile(0.50) * 1000,
        "batch_p99_ms": batch.percentile(0.99) * 1000,
        "batch_errors": batch.requests - ok_batches,
        "single_p50_ms": single.percentile(0.50) * 1000,
        "single_p99_ms": single.percentile(0.99) * 1000,
        "single_p999_ms": single.percentile(0.999) * 1000,
        "single_errors": single.requests - single.statuses.get(202, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--env", action="append", default=[], help="extra server setting NAME=VALUE"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md alone"
    )
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="avila-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for r in range(args.rounds):
            figures = run_round(tmp, args.seconds, extra_env)
            figures["store_only_events_per_s"] = store_baseline(tmp / f"baseline-{r}")
            figures["ratio_e2e_to_store"] = (
                figures["batch_events_per_s"] / figures["store_only_events_per_s"]
            )
            rounds.append(figures)
            print(
                f"round {r + 1}: " + ", ".join(f"{k}={v:,.2f}" for k, v in figures.items()),
                flush=True,
            )
    median = {k: statistics.median(f[k] for f in rounds) for k in rounds[0]}
    print("median: " + ", ".join(f"{k}={v:,.2f}" for k, v in median.items()))
    if args.no_write:
        return
    lines = [
        "## Ingest (`make bench-ingest`)",
        "",
        stamp(),
        f"One server process (plus its store process), {args.rounds} rounds of {args.seconds:g} s, fresh data dir each;"
        " the load generator runs on the same 2 cores. Median of rounds, then each round.",
        "",
        "| | median | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |",
        "|---|---|" + "---|" * len(rounds),
    ]
    labels = {
        "batch_events_per_s": "batch ingest, 100 events/request, 16 clients: durable events/s",
        "batch_p50_ms": "batch request latency p50 (ms)",
        "batch_p99_ms": "batch request latency p99 (ms)",
        "single_p50_ms": "single-event POST at 1,000 req/s: p50 (ms)",
        "single_p99_ms": "single-event POST at 1,000 req/s: p99 (ms)",
        "single_p999_ms": "single-event POST at 1,000 req/s: p99.9 (ms)",
        "store_only_events_per_s": "store-only baseline: Arrow appends into DuckDB, events/s",
        "ratio_e2e_to_store": "ratio end-to-end batch / store-only",
        "batch_errors": "non-202 batch responses",
        "single_errors": "non-202 single responses",
    }
    for key, label in labels.items():
        cells = " | ".join(f"{f[key]:,.2f}" for f in rounds)
        lines.append(f"| {label} | **{median[key]:,.2f}** | {cells} |")
    write_section("bench_ingest", "\n".join(lines))
    print("wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
