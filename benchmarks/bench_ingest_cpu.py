"""CPU seconds per unit of ingest work: a measure the shared machine's load barely distorts.

    python benchmarks/bench_ingest_cpu.py [--rounds 3] [--batches 2000] [--singles 3000]

Protocol (fixed before the runs; issue 9 speed work). Per round, a fresh server and data dir:
- batch: ``--batches`` requests of 100 events, 16 connections, closed loop; then wait until the
  loader drained the log. CPU seconds (user + system, from /proc) of the server process and of
  its store process (loader + DuckDB), per 100,000 events, and the wall events/s;
- single: ``--singles`` one-event requests at 1,000 requests/s open loop on the filled store,
  32 connections; server and store CPU seconds per 1,000 requests, p50/p99 latency;
- telemetry: ``--telemetry`` requests of 1,000 readings (3 metrics each), 16 connections; CPU
  seconds per 100,000 readings, wall readings/s.
With ``--browser`` every request carries an ``Origin`` header and the server has CORS on for
that origin (``ENABLE_CORS``, ``CORS_ORIGINS``), as for the JavaScript SDK in a web page.
CPU is read before and after each phase for the server's pid and every descendant.
Medians of rounds are printed; nothing is written (the figures go into RESULTS.md by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
from bench_telemetry import make_bodies  # noqa: E402
from events import batch_template, single_body  # noqa: E402
from results import print_median  # noqa: E402

from avila.testing import ServerProcess  # noqa: E402

KEY = "bench-key"
TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu(server_pid: int) -> tuple[float, float]:
    """(server process, all its descendants) CPU seconds so far."""
    rest = 0.0
    stack = _children(server_pid)
    while stack:
        pid = stack.pop()
        try:
            rest += cpu_seconds(pid)
        except OSError:
            continue
        stack.extend(_children(pid))
    return cpu_seconds(server_pid), rest


def _health(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url + "/health", timeout=30) as response:
        return dict(json.loads(response.read()))


def _drain(url: str) -> None:
    while _health(url)["ingest_log"]["bytes"] > 0:
        time.sleep(0.05)


BROWSER_ORIGIN = "https://shop.example"


def run_round(
    tmp: Path, batches: int, singles: int, telemetry: int, *, browser: bool = False
) -> dict[str, float]:
    env = {"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
    origin = BROWSER_ORIGIN if browser else None
    if browser:
        env.update(ENABLE_CORS="true", CORS_ORIGINS=BROWSER_ORIGIN)
    server = ServerProcess(tmp / f"server-{uuid.uuid4().hex[:6]}", env=env).start(timeout=180)
    assert server.proc is not None
    pid = server.proc.pid
    out: dict[str, float] = {}
    try:
        host, port = "127.0.0.1", server.port
        run_id = uuid.uuid4().hex[:8]
        marker = b"#" * 17
        template = loadgen.build_request(
            host, port, "/api/v1/events/batch", KEY, batch_template(100, marker), origin=origin
        )

        def batch_request(i: int) -> bytes:
            return template.replace(marker, f"{run_id}{i:09d}".encode())

        # warm up
        loadgen.run(loadgen.closed_loop(host, port, 4, 1.0, lambda i: batch_request(10**8 + i)))
        _drain(server.url)
        sent = 0

        def counted(i: int) -> bytes:
            nonlocal sent
            sent += 1
            return batch_request(i)

        before = cpu(pid)
        started = time.perf_counter()
        result = loadgen.run(_closed_count(host, port, 16, batches, counted))
        wall = time.perf_counter() - started
        _drain(server.url)
        after = cpu(pid)
        events = result.statuses.get(202, 0) * 100
        out["batch_events_per_s"] = events / wall
        out["batch_server_cpu_s_per_100k"] = (after[0] - before[0]) / events * 1e5
        out["batch_store_cpu_s_per_100k"] = (after[1] - before[1]) / events * 1e5

        def single_request(i: int) -> bytes:
            return loadgen.build_request(
                host, port, "/api/v1/events", KEY, single_body(f"s{run_id}-{i}"), origin=origin
            )

        before = cpu(pid)
        single = loadgen.run(
            loadgen.open_loop(host, port, 1000, singles / 1000, 32, single_request)
        )
        _drain(server.url)
        after = cpu(pid)
        n = single.statuses.get(202, 0)
        out["single_server_cpu_ms_per_req"] = (after[0] - before[0]) / n * 1e3
        out["single_store_cpu_ms_per_req"] = (after[1] - before[1]) / n * 1e3
        out["single_p50_ms"] = single.percentile(0.5) * 1e3
        out["single_p99_ms"] = single.percentile(0.99) * 1e3

        if telemetry:
            bodies = make_bodies(64, 1000)
            requests = [
                loadgen.build_request(
                    host, port, "/api/v1/industry40/iot/ingest", KEY, b, origin=origin
                )
                for b in bodies
            ]
            before = cpu(pid)
            started = time.perf_counter()
            tel = loadgen.run(
                _closed_count(host, port, 16, telemetry, lambda i: requests[i % len(requests)])
            )
            wall = time.perf_counter() - started
            _drain(server.url)
            after = cpu(pid)
            readings = tel.statuses.get(202, 0) * 1000
            out["telemetry_readings_per_s"] = readings / wall
            out["telemetry_server_cpu_s_per_100k"] = (after[0] - before[0]) / readings * 1e5
            out["telemetry_store_cpu_s_per_100k"] = (after[1] - before[1]) / readings * 1e5
    finally:
        server.stop(timeout=300)
    return out


async def _closed_count(host, port, connections, total, make_request):  # type: ignore[no-untyped-def]
    """Closed loop over exactly ``total`` requests."""
    import asyncio

    result = loadgen.LoadResult()
    counter = 0

    async def worker() -> None:
        nonlocal counter
        reader, writer = await asyncio.open_connection(host, port)
        while counter < total:
            counter += 1
            request = make_request(counter)
            started = time.perf_counter()
            writer.write(request)
            status = await loadgen._read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.requests += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--singles", type=int, default=3000)
    parser.add_argument("--telemetry", type=int, default=300)
    parser.add_argument(
        "--browser", action="store_true", help="requests with an Origin, CORS on (web SDK)"
    )
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="avila-bench-cpu-") as tmp_name:
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            figures = run_round(
                Path(tmp_name), args.batches, args.singles, args.telemetry, browser=args.browser
            )
            figures["load_avg"] = load
            rounds.append(figures)
            print(f"round {r + 1}: " + ", ".join(f"{k}={v:,.3f}" for k, v in figures.items()))
    print_median(rounds, 3)


if __name__ == "__main__":
    main()
