"""Predictions latency: GET /api/v1/users/{id}/predictions against a real server process.

    .venv/bin/python benchmarks/bench_predictions.py                 # 3,000 users, 90 days
    .venv/bin/python benchmarks/bench_predictions.py --users 1000 --requests 2000

Writes the e-commerce demo (deterministic) into a fresh data directory through the ingestion
path, starts ``avila serve`` on a free port, trains (POST /api/v1/ml/train), then requests
predictions for random known users one at a time over a keep-alive connection and prints
p50/p90/p99 of the client-side wall time (what a caller sees, HTTP included).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from avila.demo.ecommerce import generate_user_events
from avila.ingest.service import IngestService
from avila.storage import open_store
from avila.testing import ServerProcess

KEY = "bench-key"


def write_demo(path: Path, users: int, days: int) -> list[str]:
    store = open_store(f"duckdb:///{path}")
    ids: list[str] = []

    async def write() -> None:
        service = IngestService(store)
        await service.start()
        pending: list[bytes] = []
        for events in generate_user_events(42, users, days, datetime(2025, 3, 1, tzinfo=UTC)):
            pending.extend(events)
            if len(pending) >= 10_000:
                await service.ingest(pending, "default")
                pending = []
        if pending:
            await service.ingest(pending, "default")
        await service.close()

    try:
        asyncio.run(write())
        ids = [row[0] for row in store.query("SELECT DISTINCT user_id FROM events")]
    finally:
        store.close()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        users = write_demo(data_dir / "avila.duckdb", args.users, args.days)
        print(f"demo: {len(users)} users in {time.perf_counter() - started:.1f} s")
        env = {"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning"}
        with (
            ServerProcess(data_dir, env=env) as server,
            httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=600) as client,
        ):
            started = time.perf_counter()
            run = client.post("/api/v1/ml/train").raise_for_status().json()
            print(f"train: v{run['version']} in {time.perf_counter() - started:.1f} s")
            rng = random.Random(1)
            for user in rng.sample(users, min(200, len(users))):  # warm-up
                client.get(f"/api/v1/users/{user}/predictions").raise_for_status()
            latencies = []
            for _ in range(args.requests):
                user = rng.choice(users)
                t = time.perf_counter()
                client.get(f"/api/v1/users/{user}/predictions").raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    print(
        f"predictions: {args.requests} requests, p50 {p50:.2f} ms, p90 {p90:.2f} ms, "
        f"p99 {p99:.2f} ms, mean {statistics.fmean(latencies):.2f} ms"
    )


if __name__ == "__main__":
    main()
