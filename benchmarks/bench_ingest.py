"""Ingest benchmark: a real server process under load, beside a store-only baseline.

    python benchmarks/bench_ingest.py [--seconds 10] [--rounds 3] [--no-write] [--only loader]

Protocol (fixed before the runs; issue 9). Per round, on a fresh server and data directory,
in this order, so the single-event scenarios run on the store the batch scenario just filled:
- batch: 100 events per request, 16 keep-alive connections in a closed loop; every 202 means
  the events are durable in the ingest log (group fsync). Meanwhile a visibility probe posts
  one event every 100 ms and reads that user's profile (``GET /api/v1/users/{id}``) until it
  shows: the lag from the 202 to the first read that sees the event (this includes the
  profile query's own time on the loaded server); the server also reports, per log entry,
  the time from its 202 to its load into DuckDB (/health ``load_lag_p50_s``/``p99_s``);
- drain: time until the loader has moved the whole backlog into DuckDB (from /health);
- single: one event per request at a fixed 1,000 requests/s (open loop; latency counted from
  each request's due time, so queueing is not hidden), 32 connections;
- sequential: one client, one request at a time, one event each;
- loader: the log of ``LOADER_EVENTS`` events (entries of 5,000) replayed into a fresh DuckDB
  file by the loader alone (recovery scan, read, decode, Arrow, commit; its rounds as in the
  server: a backlog this large loads in catch-up rounds), in this process: events/s
  (``--only loader``: just this, with CPU per event of the replay and of the store's close);
- store-only baseline: the same events appended straight into a DuckDB file from Arrow, one
  transaction per 5,000 events, in this process, no HTTP, no validation, no log;
- telemetry: ``bench_telemetry``'s round (1,000 readings x 3 metrics per request, 16
  connections, a fresh server), durable readings/s.
Reports per-round figures and medians, then each issue-9 target against its median, and writes
them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_telemetry  # noqa: E402
import loadgen  # noqa: E402
from events import EVENT, batch_template, single_body  # noqa: E402
from results import (  # noqa: E402
    add_env_option,
    env_settings,
    print_median,
    stamp,
    write_section,
)

from avila.ingest.service import IngestService  # noqa: E402
from avila.ingest.validation import validate_events  # noqa: E402
from avila.storage.duckdb.store import DuckDBStore  # noqa: E402
from avila.storage.ingest_log import IngestLogConfig  # noqa: E402
from avila.testing import ServerProcess  # noqa: E402

KEY = "bench-key"
BATCH = 100
CONNECTIONS = 16
SINGLE_RATE = 1000
LOADER_EVENTS = 400_000


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


def loader_throughput(
    tmp: Path, total_events: int = LOADER_EVENTS, details: dict[str, float] | None = None
) -> float:
    """Fill an ingest log through the ingest service, then time its replay into a fresh store.
    ``details`` (if given) receives this process's CPU per event during the replay and during
    the store's close (its checkpoint: work the replay left for later)."""
    source = DuckDBStore(tmp / "source.duckdb")
    # One big segment: the source's own loader never deletes the newest segment.
    source.ingest_log_config = IngestLogConfig(tmp / "log", segment_bytes=1 << 31)

    async def fill() -> None:
        service = IngestService(source)
        await service.start()
        for c in range(total_events // 5000):
            raws = [
                EVENT.replace(b"@ID@", f"l{c}-{i}".encode()).replace(b"@U@", str(i % 97).encode())
                for i in range(5000)
            ]
            await service.ingest(raws, "bench")
        await service.close()

    asyncio.run(fill())
    # Keep the filled log before the source's loader trims it, then replay it elsewhere.
    snapshot = tmp / "log-copy"
    shutil.copytree(tmp / "log", snapshot)
    source.close()
    target = DuckDBStore(tmp / "target.duckdb")
    target.ingest_log_config = IngestLogConfig(snapshot)
    cpu = time.process_time()
    started = time.perf_counter()
    target.open_ingest_log()
    progress = target.load_progress
    progress.wait_loaded(progress.durable, 600)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    loaded = target.query("SELECT count(*) FROM events")[0][0]
    closing = time.process_time()
    target.close()
    if details is not None:
        details["loader_cpu_us_per_event"] = cpu / total_events * 1e6
        details["loader_close_cpu_us_per_event"] = (
            (time.process_time() - closing) / total_events * 1e6
        )
    assert loaded == total_events, (loaded, total_events)
    return total_events / elapsed


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return dict(json.loads(response.read()))


async def visibility_probe(
    host: str, port: int, run_id: str, stop: asyncio.Event, lags: list[float]
) -> None:
    """Every 100 ms: post one event for a new user, then read the user's profile until it
    shows; the lag is from the 202 to that read's answer."""
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    while not stop.is_set():
        n += 1
        user = f"vis-{run_id}-{n}"
        body = single_body(f"v{run_id}-{n}").replace(b'"user_7"', f'"{user}"'.encode())
        writer.write(loadgen.build_request(host, port, "/api/v1/events", KEY, body))
        if await loadgen._read_response(reader) != 202:
            continue
        acked = time.perf_counter()
        while True:
            writer.write(
                f"GET /api/v1/users/{user} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"x-api-key: {KEY}\r\n\r\n".encode()
            )
            if await loadgen._read_response(reader) == 200:
                lags.append(time.perf_counter() - acked)
                break
            if time.perf_counter() - acked > 30:
                lags.append(float("inf"))
                break
        await asyncio.sleep(0.1)
    writer.close()


async def sequential(host: str, port: int, seconds: float, make_request) -> loadgen.LoadResult:  # type: ignore[no-untyped-def]
    return await loadgen.closed_loop(host, port, 1, seconds, make_request)


class BatchPhase(NamedTuple):
    batch: loadgen.LoadResult
    lags: list[float]  # the visibility probe's, seconds
    backlog_at_end: dict[str, Any]  # /health's ingest_log when the batch phase ended
    drain_s: float


def one_event_request(host: str, port: int, event_id: str) -> bytes:
    return loadgen.build_request(host, port, "/api/v1/events", KEY, single_body(event_id))


def batch_phase(server: ServerProcess, seconds: float, run_id: str) -> BatchPhase:
    """A round's first part, on a fresh server: warm-up, the batch scenario with the
    visibility probe beside it, then the wait until the loader drained the backlog. What runs
    after it runs on the store this filled."""
    host, port = "127.0.0.1", server.port
    marker = b"#" * 17
    template = loadgen.build_request(
        host, port, "/api/v1/events/batch", KEY, batch_template(BATCH, marker)
    )

    def batch_request(i: int) -> bytes:
        # The id prefix has the marker's length, so Content-Length stays right.
        return template.replace(marker, f"{run_id}{i:09d}".encode())

    async def batch_with_probe() -> tuple[loadgen.LoadResult, list[float]]:
        stop = asyncio.Event()
        lags: list[float] = []
        probe = asyncio.create_task(visibility_probe(host, port, run_id, stop, lags))
        batch = await loadgen.closed_loop(host, port, CONNECTIONS, seconds, batch_request)
        stop.set()
        await probe
        return batch, lags

    # Warm up (imports, first entries, connections), then batch.
    loadgen.run(loadgen.closed_loop(host, port, 4, 1.0, lambda i: batch_request(10**8 + i)))
    batch, lags = loadgen.run(batch_with_probe())
    backlog_at_end = _get(server.url + "/health")["ingest_log"]
    drain_started = time.perf_counter()
    while _get(server.url + "/health")["ingest_log"]["bytes"] > 0:
        time.sleep(0.05)
    return BatchPhase(batch, lags, backlog_at_end, time.perf_counter() - drain_started)


def run_round(tmp: Path, seconds: float, extra_env: dict[str, str]) -> dict[str, float]:
    env = {"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning", **extra_env}
    server = ServerProcess(tmp / f"server-{uuid.uuid4().hex[:6]}", env=env).start(timeout=180)
    try:
        run_id = uuid.uuid4().hex[:8]
        host, port = "127.0.0.1", server.port
        batch, lags, backlog_at_end, drain_s = batch_phase(server, seconds, run_id)
        # The single-event scenarios, on the store the batch scenario filled.
        single = loadgen.run(
            loadgen.open_loop(
                host,
                port,
                SINGLE_RATE,
                seconds,
                32,
                lambda i: one_event_request(host, port, f"s{run_id}-{i}"),
            )
        )
        seq = loadgen.run(
            sequential(
                host, port, seconds, lambda i: one_event_request(host, port, f"q{run_id}-{i}")
            )
        )
    finally:
        server.stop(timeout=300)
    ok_batches = batch.statuses.get(202, 0)
    lags.sort()
    return {
        "batch_events_per_s": ok_batches * BATCH / batch.seconds,
        "batch_p50_ms": batch.percentile(0.50) * 1000,
        "batch_p99_ms": batch.percentile(0.99) * 1000,
        "batch_errors": batch.requests - ok_batches,
        "backlog_events_at_end": backlog_at_end["events"],
        "drain_s": drain_s,
        "load_lag_p50_ms": (backlog_at_end["load_lag_p50_s"] or 0) * 1000,
        "load_lag_p99_ms": (backlog_at_end["load_lag_p99_s"] or 0) * 1000,
        "visibility_p50_ms": lags[len(lags) // 2] * 1000 if lags else float("nan"),
        "visibility_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000
        if lags
        else float("nan"),
        "single_p50_ms": single.percentile(0.50) * 1000,
        "single_p99_ms": single.percentile(0.99) * 1000,
        "single_p999_ms": single.percentile(0.999) * 1000,
        "single_errors": single.requests - single.statuses.get(202, 0),
        "sequential_p50_ms": seq.percentile(0.50) * 1000,
        "sequential_p99_ms": seq.percentile(0.99) * 1000,
        "sequential_req_per_s": seq.requests / seq.seconds,
    }


#: Issue 9's targets: (name, figure, test of its median).
TARGETS = (
    ("batch >= 80,000 durable events/s", "batch_events_per_s", lambda v: v >= 80_000),
    ("batch >= 0.35 x store-only", "ratio_e2e_to_store", lambda v: v >= 0.35),
    ("single-event p99 <= 5 ms at 1,000 req/s", "single_p99_ms", lambda v: v <= 5),
    ("sequential p50 <= 2 ms", "sequential_p50_ms", lambda v: v <= 2),
    ("loader >= 150,000 events/s", "loader_events_per_s", lambda v: v >= 150_000),
    ("visibility (202 to profile read) p99 <= 1 s", "visibility_p99_ms", lambda v: v <= 1000),
    ("telemetry >= 200,000 readings/s", "telemetry_readings_per_s", lambda v: v >= 200_000),
)

#: The 1-minute load average when the benchmark started (the neighbours' share of the cores).
LOAD_AT_START = os.getloadavg()[0]


def loader_only(rounds: int) -> None:
    """Only the loader round: events/s as in the full run, plus CPU per event."""
    figures: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="avila-bench-") as tmp_name:
        for r in range(rounds):
            tmp = Path(tmp_name) / f"loader-{r}"
            tmp.mkdir()
            found: dict[str, float] = {}
            found["loader_events_per_s"] = loader_throughput(tmp, details=found)
            found["load_average"] = os.getloadavg()[0]
            figures.append(found)
            print(f"round {r + 1}: " + ", ".join(f"{k}={v:,.2f}" for k, v in found.items()))
            shutil.rmtree(tmp)
    print_median(figures)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    add_env_option(parser)
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md alone"
    )
    parser.add_argument(
        "--only",
        choices=["loader"],
        help="run only this part of each round (printed, RESULTS.md left alone)",
    )
    args = parser.parse_args()
    if args.only == "loader":
        loader_only(args.rounds)
        return
    extra_env = env_settings(args)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="avila-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for r in range(args.rounds):
            figures = run_round(tmp, args.seconds, extra_env)
            (tmp / f"loader-{r}").mkdir()
            figures["loader_events_per_s"] = loader_throughput(tmp / f"loader-{r}")
            figures["store_only_events_per_s"] = store_baseline(tmp / f"baseline-{r}")
            figures["ratio_e2e_to_store"] = (
                figures["batch_events_per_s"] / figures["store_only_events_per_s"]
            )
            (tmp / f"telemetry-{r}").mkdir()
            telemetry = bench_telemetry.run_round(tmp / f"telemetry-{r}", args.seconds, 1000, 16)
            figures["telemetry_readings_per_s"] = telemetry["readings_per_s"]
            figures["telemetry_values_missing"] = telemetry["acknowledged_values_missing"]
            rounds.append(figures)
            print(
                f"round {r + 1}: " + ", ".join(f"{k}={v:,.2f}" for k, v in figures.items()),
                flush=True,
            )
    median = print_median(rounds)
    verdicts = [
        f"| {name} | {median[key]:,.2f} | {'met' if ok(median[key]) else 'NOT met'} |"
        for name, key, ok in TARGETS
    ]
    print("\n".join(["issue 9 targets (medians):", *verdicts]))
    if args.no_write:
        return
    lines = [
        "## Ingest (`make bench-ingest`)",
        "",
        stamp(),
        f"Machine: {os.cpu_count()} cores, load average {LOAD_AT_START:.2f} when the run started"
        f" and {os.getloadavg()[0]:.2f} at its end. One server process (plus its store process), {args.rounds} rounds of {args.seconds:g} s,"
        " fresh data dir each round; single-event scenarios run on the store the batch scenario filled;"
        " the load generator runs on the same 2 cores. Median of rounds, then each round.",
        "",
        "| | median | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |",
        "|---|---|" + "---|" * len(rounds),
    ]
    labels = {
        "batch_events_per_s": "batch ingest, 100 events/request, 16 clients: durable events/s",
        "batch_p50_ms": "batch request latency p50 (ms)",
        "batch_p99_ms": "batch request latency p99 (ms)",
        "backlog_events_at_end": "ingest-log backlog when the batch phase ended (events)",
        "drain_s": "time for the loader to drain that backlog (s)",
        "load_lag_p50_ms": "batch phase: 202 to loaded into DuckDB, per log entry (server side): p50 (ms)",
        "load_lag_p99_ms": "batch phase: 202 to loaded into DuckDB, per log entry: p99 (ms)",
        "visibility_p50_ms": "batch phase: 202 to a profile read that shows the event (client side, includes the query under load): p50 (ms)",
        "visibility_p99_ms": "batch phase: 202 to a profile read that shows the event: p99 (ms)",
        "single_p50_ms": "single-event POST at 1,000 req/s after the batch phase: p50 (ms)",
        "single_p99_ms": "single-event POST at 1,000 req/s after the batch phase: p99 (ms)",
        "single_p999_ms": "single-event POST at 1,000 req/s after the batch phase: p99.9 (ms)",
        "sequential_p50_ms": "single-event POST, one client, one at a time: p50 (ms)",
        "sequential_p99_ms": "single-event POST, one client, one at a time: p99 (ms)",
        "sequential_req_per_s": "single-event POST, one client: requests/s",
        "loader_events_per_s": "loader alone: log replayed into DuckDB, events/s",
        "store_only_events_per_s": "store-only baseline: Arrow appends into DuckDB, events/s",
        "ratio_e2e_to_store": "ratio end-to-end batch / store-only",
        "batch_errors": "non-202 batch responses",
        "single_errors": "non-202 single responses",
        "telemetry_readings_per_s": "telemetry, 1,000 readings/request, 16 clients: durable readings/s",
        "telemetry_values_missing": "telemetry: acknowledged values not in the store after the drain",
    }
    for key, label in labels.items():
        cells = " | ".join(f"{f[key]:,.2f}" for f in rounds)
        lines.append(f"| {label} | **{median[key]:,.2f}** | {cells} |")
    lines += ["", "Issue 9's targets against these medians:", "", "| target | median | |"]
    lines += ["|---|---|---|", *verdicts]
    write_section("bench_ingest", "\n".join(lines))
    print("wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
