"""Ingest latency while heavy analytics queries run (issue 13: p99 <= 10 ms).

Protocol (fixed before the runs): a copy of the largest analytics benchmark store available
under /work/benchdata (``analytics_<N>.duckdb``, written by bench_analytics.py; the 100M file
when it is complete, else the largest) is served by a real ``avila serve`` on a free port. Per
round, two phases of ``--seconds`` each on the same server:

- **quiet**: single-event ``POST /api/v1/events`` open loop at ``--rate`` req/s (latency from
  the due time, no coordinated omission) and ``GET /health`` every 100 ms;
- **heavy**: the same, while one client runs the heavy analytics query in a loop (overview and
  weekly retention over the whole range of the bench project's data, ``SPAN_DAYS`` up to
  ``END`` of bench_analytics.py, alternating), each under the server's
  ``AVILA_QUERY_TIMEOUT`` (0 here: the query runs to the end). A heavy query that finds no
  events stops the run: it would measure nothing.

With ``--heavy export-json`` (or ``export-csv``, ``export-parquet``) the heavy load is instead one
client streaming ``POST /api/v1/export`` of the whole bench project in that format, back to back,
reading as fast as it can (an export that outlasts the phase is cut when the phase ends).
Exports are encoded in the server process (pyarrow for CSV and Parquet, msgspec over Python rows
for JSON), so this measures what an export costs the acknowledging event loop.

The heavy-query client and the ``/health`` probe run in a process of their own: in the load
generator's process their threads would take its GIL and delay the requests it times. So does,
unless ``--no-flush-probe``, a probe of the disk itself (``flush_probe.py``: 4 KB append +
``fdatasync`` every 10 ms in the server's data directory, the ingest log's disk): a 202 waits
for such a flush, so the probe's slow flushes are the part of the ingest tail no server code
can remove; it adds ~100 small flushes/s to the server's own (one per group commit).

Reported per phase: ingest p50/p99/p99.9, non-202 count, /health p50/p99/max, the number
and median duration of heavy queries, and the disk probe's flush p50/p99/max and count over
10 ms; medians over ``--rounds`` rounds. The machine is shared.

    python benchmarks/bench_heavy_query.py --rounds 3 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import loadgen  # noqa: E402
from bench_analytics import END, SPAN_DAYS  # noqa: E402
from events import single_body  # noqa: E402
from flush_probe import probe as flush_probe  # noqa: E402
from flush_probe import summary as flush_summary  # noqa: E402
from results import add_env_option, env_settings, stamp, write_section  # noqa: E402

from avila.security.keys import KeyStore  # noqa: E402
from avila.testing.server import ServerProcess  # noqa: E402

BENCHDATA = Path("/work/benchdata")
INGEST_KEY = "heavy-bench-key"
_FIRST = (END - timedelta(days=SPAN_DAYS)).isoformat() + "Z"
_LAST = (END + timedelta(days=1)).isoformat() + "Z"
HEAVY = [
    ("GET", "/api/v1/analytics/overview", {"start_time": _FIRST, "end_time": _LAST}, None),
    ("POST", "/api/v1/analytics/cohort", None, {"period": "week", "periods": 12, "start_time": _FIRST, "end_time": _LAST}),
]  # fmt: skip


#: The 1-minute load average when the benchmark started (the neighbours' share of the cores).
LOAD_AT_START = os.getloadavg()[0]


def pick_store() -> Path:
    """The largest analytics_<N>.duckdb not written to in the last 5 minutes (one being built
    is still growing)."""
    found = []
    for path in BENCHDATA.glob("analytics_*.duckdb"):
        match = re.fullmatch(r"analytics_(\d+)\.duckdb", path.name)
        quiet = time.time() - max(
            p.stat().st_mtime for p in (path, path.with_name(path.name + ".wal")) if p.exists()
        )
        if match and quiet > 300:
            found.append((int(match.group(1)), path))
    if not found:
        raise SystemExit(f"no finished analytics_<N>.duckdb under {BENCHDATA}")
    return max(found)[1]


def export_loop(
    url: str, key: str, fmt: str, stop: threading.Event, durations: list[float], mb: list[float]
) -> None:
    body = {"format": fmt, "filters": {"start_time": _FIRST, "end_time": _LAST}}
    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=600) as client:
        while not stop.is_set():
            started = time.perf_counter()
            received = 0
            with client.stream("POST", "/api/v1/export", json=body) as response:
                if response.status_code != 200:
                    raise SystemExit(f"export: {response.status_code} {response.read()[:300]!r}")
                for chunk in response.iter_raw():
                    received += len(chunk)
                    if stop.is_set():
                        break
            if not received:
                raise SystemExit("the export sent nothing")
            durations.append(time.perf_counter() - started)
            mb.append(received / 1e6)


def heavy_loop(
    url: str, key: str, stop: threading.Event, durations: list[float], heavy: str, mb: list[float]
) -> None:
    if heavy.startswith("export-"):
        export_loop(url, key, heavy.removeprefix("export-"), stop, durations, mb)
        return
    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=600) as client:
        i = 0
        while not stop.is_set():
            method, path, params, body = HEAVY[i % len(HEAVY)]
            started = time.perf_counter()
            response = client.request(method, path, params=params, json=body)
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
            answer = response.json()
            if not (answer.get("total_events") or answer.get("cohorts")):
                raise SystemExit(f"{path} found no events: {response.text[:300]}")
            durations.append(time.perf_counter() - started)
            i += 1


def health_loop(url: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/health")
            latencies.append(time.perf_counter() - started)
            stop.wait(0.1)


def peak_memory_gb(server: ServerProcess) -> dict[str, float]:
    """Peak resident memory (VmHWM, GB) of the server process, its store process and the
    largest of its query workers (nan without workers: ``AVILA_QUERY_WORKERS=0``)."""

    def hwm(pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
        return float("nan")

    assert server.proc is not None
    pid = server.proc.pid
    stores = server.store_pids()
    workers = server.query_worker_pids()
    return {
        "server": hwm(pid),
        "store": max((hwm(c) for c in stores), default=float("nan")),
        "workers": max((hwm(c) for c in workers), default=float("nan")),
    }


def _probes(url: str, key: str, heavy: str, flush_dir: Path | None, done: Any, out: Any) -> None:
    """The /health probe, the disk's flush probe in ``flush_dir`` (None: none) and (``heavy``
    not empty) the heavy loop, in their own process, until ``done`` is set; then their timings
    go to ``out``."""
    stop = threading.Event()
    durations: list[float] = []
    health: list[float] = []
    flushes: list[float] = []
    failed: list[str] = []
    mb: list[float] = []

    def heavy_thread() -> None:
        try:
            heavy_loop(url, key, stop, durations, heavy, mb)
        except SystemExit as exc:
            failed.append(str(exc))
            stop.set()

    threads = [threading.Thread(target=health_loop, args=(url, stop, health))]
    if flush_dir is not None:
        threads.append(threading.Thread(target=flush_probe, args=(flush_dir, stop, flushes)))
    if heavy:
        threads.append(threading.Thread(target=heavy_thread))
    for thread in threads:
        thread.start()
    while not done.wait(0.1) and not stop.is_set():
        pass
    stop.set()
    for thread in threads:
        thread.join()
    out.put((durations, health, flushes, failed, sum(mb)))


def phase(
    server: ServerProcess,
    bench_key: str,
    seconds: float,
    rate: float,
    heavy: str,
    tag: str,
    flush_dir: Path | None,
) -> dict[str, float]:
    ctx = get_context("spawn")
    done, out = ctx.Event(), ctx.Queue()
    probes = ctx.Process(target=_probes, args=(server.url, bench_key, heavy, flush_dir, done, out))
    probes.start()
    time.sleep(2.0 if heavy else 1.0)  # the probe process starts; the first heavy query runs
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])

    def request(i: int) -> bytes:
        return loadgen.build_request(
            host, port, "/api/v1/events", INGEST_KEY, single_body(f"{tag}-{i}")
        )

    result = loadgen.run(loadgen.open_loop(host, port, rate, seconds, 32, request))
    done.set()
    durations, health, flushes, failed, received_mb = out.get(timeout=1200)
    probes.join()
    if failed:
        raise SystemExit(failed[0])
    ordered = sorted(health)
    return {
        "ingest p50 (ms)": result.percentile(0.50) * 1000,
        "ingest p99 (ms)": result.percentile(0.99) * 1000,
        "ingest p99.9 (ms)": result.percentile(0.999) * 1000,
        "non-202 ingest responses": float(
            sum(n for status, n in result.statuses.items() if status != 202)
        ),
        "/health p50 (ms)": statistics.median(ordered) * 1000 if ordered else float("nan"),
        "/health p99 (ms)": ordered[int(0.99 * (len(ordered) - 1))] * 1000
        if ordered
        else float("nan"),
        "/health max (ms)": ordered[-1] * 1000 if ordered else float("nan"),
        "heavy queries finished": float(len(durations)),
        "heavy query median (s)": statistics.median(durations) if durations else float("nan"),
        "export received (MB/s)": received_mb / seconds,
        **({} if flush_dir is None else {
            f"disk probe: {k}": v for k, v in flush_summary(flushes).items()
        }),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--store", type=Path, default=None, help="default: the largest bench store")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--no-flush-probe", action="store_true", help="no disk flush probe beside the phases"
    )
    parser.add_argument(
        "--heavy",
        choices=["queries", "export-json", "export-csv", "export-parquet"],
        default="queries",
        help="the heavy load: analytics queries (default) or one streaming export",
    )
    add_env_option(parser)
    args = parser.parse_args()
    extra_env = env_settings(args)
    source = args.store or pick_store()
    rows = int(re.findall(r"\d+", source.name)[0])
    scratch = Path(tempfile.mkdtemp(prefix="avila-bench-heavy-"))
    try:
        print(f"copying {source} ...", file=sys.stderr)
        shutil.copyfile(source, scratch / "avila.duckdb")
        wal = source.with_name(source.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, scratch / "avila.duckdb.wal")
        # The copy leaves gigabytes of dirty pages; their writeback would compete with the log's
        # fdatasync about 30 s later (the kernel's dirty expiry), inside the measured rounds.
        os.sync()
        keys = KeyStore(scratch / "keys.sqlite")
        bench_key, _ = keys.create("bench", ["read"], "heavy-query bench")
        server = ServerProcess(
            scratch,
            env={
                "API_KEYS": INGEST_KEY,
                "RATE_LIMIT_PER_MINUTE": "0",
                "LOG_LEVEL": "warning",
                "AVILA_QUERY_TIMEOUT": "0",
                **extra_env,
            },
        )
        server.start(timeout=300)
        rounds: list[tuple[dict[str, float], dict[str, float]]] = []
        try:
            for n in range(args.rounds):
                flush_dir = None if args.no_flush_probe else scratch
                quiet = phase(server, bench_key, args.seconds, args.rate, "", f"q{n}", flush_dir)
                heavy = phase(
                    server, bench_key, args.seconds, args.rate, args.heavy, f"h{n}", flush_dir
                )
                print(f"  round {n + 1}: quiet {quiet}\n           heavy {heavy}", file=sys.stderr)
                rounds.append((quiet, heavy))
            peaks = peak_memory_gb(server)
        finally:
            server.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = [
        f"{rows:,}-event store ({source.name}), single events at {args.rate:,.0f} req/s open"
        f" loop, {args.seconds:g} s per phase, {args.rounds} rounds (median; then each round"
        " quiet / heavy)" + "".join(f"; server setting {k}={v}" for k, v in extra_env.items()),
        "",
        f"| | quiet (median) | heavy load running: {args.heavy} (median) | rounds: quiet / heavy |",
        "|---|---|---|---|",
    ]
    for name in rounds[0][0]:
        quiet = [r[0][name] for r in rounds]
        heavy = [r[1][name] for r in rounds]
        each = "; ".join(f"{q:,.2f} / {h:,.2f}" for q, h in zip(quiet, heavy, strict=True))
        lines.append(
            f"| {name} | {statistics.median(quiet):,.2f} | **{statistics.median(heavy):,.2f}** | {each} |"
        )
    lines.append("")
    lines.append(
        "Peak resident memory over the whole run (VmHWM): server process"
        f" {peaks['server']:.1f} GB, store process {peaks['store']:.1f} GB, largest query worker"
        f" {peaks['workers']:.1f} GB."
    )
    table = "\n".join(lines)
    print(table)
    if not args.no_write and args.heavy != "queries":
        print("(export runs are not written to RESULTS.md by the script: record them by hand)")
    elif not args.no_write:
        write_section(
            "bench_heavy_query",
            "## Ingest while heavy queries run (`python benchmarks/bench_heavy_query.py --rounds"
            f" {args.rounds} --seconds {args.seconds:g}"
            + (f" --store {args.store}" if args.store else "")
            + "".join(f" --env {k}={v}" for k, v in extra_env.items())
            + f"`)\n\n{stamp()}\nMachine: {os.cpu_count()} cores,"
            f" load average {LOAD_AT_START:.1f} when the run started and"
            f" {os.getloadavg()[0]:.1f} when written; the load generator and the heavy-query client run on the same"
            " cores. Heavy query: overview and 12-week retention over the whole bench project,"
            " alternating, one at a time, back to back.\n\n" + table,
        )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
