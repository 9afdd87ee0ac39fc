"""User profile latency on a real server with history, idle and under batch load.

    python benchmarks/bench_profile.py [--rounds 2] [--seconds 10] [--env PYTHONPATH=<tree>/src]

Protocol (fixed before the runs; 2026-12-03). Per round, a fresh server and data directory:
warm up with 1 s of batches, then
- load: 100-event batches on 16 connections in a closed loop for ``--seconds`` (the batch
  template's 100 users, so each ends with thousands of events) while one client reads
  ``GET /api/v1/users/user_5`` every 100 ms: latency p50 / p90 / max (each read waits for the
  loader first, read-your-writes, so this includes the load lag);
- idle: the same reads for 5 s after the load stops (the backlog drained first).
Prints per round and the medians of rounds; writes nothing (the figures go into RESULTS.md by
hand). ``--env`` passes settings (or another tree's ``PYTHONPATH``) to the server, for A/B runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
from bench_ingest_cpu import _drain  # noqa: E402
from events import batch_template  # noqa: E402
from results import add_env_option, env_settings, print_median  # noqa: E402

from avila.testing import ServerProcess  # noqa: E402

KEY = "bench-key"
USER = "user_5"


async def _reads(host: str, port: int, stop: asyncio.Event, out: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        f"GET /api/v1/users/{USER} HTTP/1.1\r\nHost: {host}:{port}\r\nx-api-key: {KEY}\r\n\r\n"
    ).encode()
    while not stop.is_set():
        started = time.perf_counter()
        writer.write(request)
        if await loadgen._read_response(reader) != 200:
            raise SystemExit(f"GET /api/v1/users/{USER} did not answer 200")
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.1)
    writer.close()


def _figures(name: str, times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        f"{name}_p50_ms": times[len(times) // 2],
        f"{name}_p90_ms": times[int(len(times) * 0.9)],
        f"{name}_max_ms": times[-1],
        f"{name}_reads": float(len(times)),
    }


def run_round(tmp: Path, seconds: float, extra_env: dict[str, str]) -> dict[str, float]:
    env = {"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning", **extra_env}
    server = ServerProcess(tmp / f"server-{uuid.uuid4().hex[:6]}", env=env).start(timeout=180)
    try:
        host, port = "127.0.0.1", server.port
        marker = b"#" * 17
        run_id = uuid.uuid4().hex[:8]
        template = loadgen.build_request(
            host, port, "/api/v1/events/batch", KEY, batch_template(100, marker)
        )

        def batch(i: int) -> bytes:
            return template.replace(marker, f"{run_id}{i:09d}".encode())

        loadgen.run(loadgen.closed_loop(host, port, 4, 1.0, lambda i: batch(10**8 + i)))
        _drain(server.url)

        async def phases() -> dict[str, float]:
            out: dict[str, float] = {}
            for phase in ("load", "idle"):
                stop = asyncio.Event()
                times: list[float] = []
                reads = asyncio.create_task(_reads(host, port, stop, times))
                if phase == "load":
                    await loadgen.closed_loop(host, port, 16, seconds, batch)
                else:
                    await asyncio.to_thread(_drain, server.url)
                    times.clear()
                    await asyncio.sleep(5)
                stop.set()
                await reads
                out.update(_figures(phase, times))
            return out

        return asyncio.run(phases())
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    add_env_option(parser)
    args = parser.parse_args()
    extra_env = env_settings(args)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="avila-bench-") as tmp_name:
        for r in range(args.rounds):
            figures = run_round(Path(tmp_name), args.seconds, extra_env)
            rounds.append(figures)
            print(f"round {r + 1}: " + ", ".join(f"{k}={v:,.1f}" for k, v in figures.items()))
    print_median(rounds, 1)


if __name__ == "__main__":
    main()
