"""Telemetry ingest benchmark against a real server process.

    python benchmarks/bench_telemetry.py [--seconds 10] [--rounds 3] [--batch 1000]

Closed loop on ``POST /api/v1/industry40/iot/ingest``: ``--connections`` (default 16) keep-alive
connections, each sending ``{"readings": [...]}`` bodies of ``--batch`` readings (3 metrics
each: temperature, vibration, power_kw; 200 devices) as soon as the previous 202 arrived. A 202
means the readings are durable (in the ingest log; counted in the store once loaded). Reports readings/s and metric values/s, p50/p99
request latency, and checks afterwards, in the DuckDB file, that every acknowledged reading
was stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb  # noqa: E402
import loadgen  # noqa: E402

from avila.testing import ServerProcess  # noqa: E402

KEY = "bench-key"
METRICS = 3


def make_bodies(count: int, batch: int) -> list[bytes]:
    """``count`` distinct request bodies (timestamps differ so rows are distinct)."""
    base = datetime.now(UTC) - timedelta(hours=1)
    bodies = []
    for b in range(count):
        readings = []
        for i in range(batch):
            ts = (base + timedelta(microseconds=b * batch + i)).isoformat().replace("+00:00", "Z")
            readings.append(
                f'{{"device_id":"dev-{i % 200}","device_type":"press","timestamp":"{ts}",'
                f'"metrics":{{"temperature":{20 + (i % 17) * 0.5},"vibration":{(i % 13) * 0.01},'
                f'"power_kw":{3 + (i % 7) * 0.1}}}}}'
            )
        bodies.append(('{"readings":[' + ",".join(readings) + "]}").encode())
    return bodies


def run_round(tmp: Path, seconds: float, batch: int, connections: int) -> dict[str, float]:
    data = tmp / f"server-{uuid.uuid4().hex[:6]}"
    env = {"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
    bodies = make_bodies(64, batch)
    server = ServerProcess(data, env=env).start(timeout=180)
    try:
        requests = [
            loadgen.build_request(
                "127.0.0.1", server.port, "/api/v1/industry40/iot/ingest", KEY, body
            )
            for body in bodies
        ]
        result = asyncio.run(
            loadgen.closed_loop(
                "127.0.0.1",
                server.port,
                connections,
                seconds,
                lambda i: requests[i % len(requests)],
            )
        )
        # A 202 means durable in the ingest log; wait for the loader before counting rows.
        while True:
            with urllib.request.urlopen(server.url + "/health", timeout=60) as response:
                if json.loads(response.read())["ingest_log"]["bytes"] == 0:
                    break
            time.sleep(0.1)
    finally:
        server.stop(timeout=300)
    ok = result.statuses.get(202, 0)
    with duckdb.connect(str(data / "avila.duckdb"), read_only=True) as conn:
        stored = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]  # type: ignore[index]
    return {
        "readings_per_s": ok * batch / result.seconds,
        "values_per_s": ok * batch * METRICS / result.seconds,
        "p50_ms": result.percentile(0.50) * 1000,
        "p99_ms": result.percentile(0.99) * 1000,
        "non_202": result.requests - ok,
        "acknowledged_values_missing": ok * batch * METRICS - stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    rounds = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="avila-bench-telemetry-") as tmp_name:
        for r in range(args.rounds):
            figures = run_round(Path(tmp_name), args.seconds, args.batch, args.connections)
            rounds.append(figures)
            print(
                f"round {r + 1}: " + ", ".join(f"{k}={v:,.1f}" for k, v in figures.items()),
                flush=True,
            )
    medians = {k: statistics.median(f[k] for f in rounds) for k in rounds[0]}
    print("median: " + ", ".join(f"{k}={v:,.1f}" for k, v in medians.items()))
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "median": medians}, indent=2))


if __name__ == "__main__":
    main()
