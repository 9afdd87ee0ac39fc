"""CPU of moving device seen-times after a telemetry request (``DeviceRegistry.touch``).

    python benchmarks/bench_device_touch.py [--requests 20] [--reps 30]

In this process: ``--requests`` bodies of 1,000 readings (``bench_telemetry.make_bodies``: 200
devices, 3 metrics) through ``parse_body`` and ``build_rows``, their devices registered, then
``touch`` over all of them ``--reps`` times; prints the median microseconds per request. Run
another tree's code with ``PYTHONPATH=<tree>/src`` for an A/B (RESULTS.md, "Device seen-times").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_telemetry import make_bodies  # noqa: E402

from avila.industry40.devices import DeviceRegistry  # noqa: E402
from avila.industry40.telemetry import build_rows, parse_body  # noqa: E402
from avila.storage.duckdb.store import DuckDBStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avila-bench-") as tmp:
        store = DuckDBStore(Path(tmp) / "store.duckdb")
        registry = DeviceRegistry(store)
        requests = []
        for body in make_bodies(args.requests, 1000):
            parsed = parse_body(body, max_readings=10_000)
            rows, _ = build_rows("bench", parsed.readings)
            registry.claim_new(rows)
            requests.append(rows)
        per_request = []
        for _ in range(args.reps):
            started = time.perf_counter()
            for rows in requests:
                registry.touch(rows)
            per_request.append((time.perf_counter() - started) / len(requests))
        store.close()
    print(f"touch per 1,000-reading request: median {statistics.median(per_request) * 1e6:.0f} us")


if __name__ == "__main__":
    main()
