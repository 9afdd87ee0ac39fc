"""HTTP tier: uvicorn (what ``avila serve`` runs) against granian, same app, same scenarios.

    python benchmarks/bench_http_server.py [--seconds 8] [--rounds 3] [--no-write]

Protocol (fixed before the runs; issue 9): per round and server, a fresh data directory; batch
(100 events/request, 16 connections, closed loop), then single events at 1,000 requests/s
(open loop, 32 connections) on the store the batch filled, then one client one request at a
time. uvicorn as ``avila serve`` runs it (uvloop, httptools); granian 1 worker, ASGI interface,
its defaults otherwise. Adopt granian only if it wins clearly (>= 15 % on batch events/s and not
worse on single-event p99).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
from events import batch_template, single_body  # noqa: E402
from results import stamp, write_section  # noqa: E402

from avila.testing.server import free_port  # noqa: E402

KEY = "bench-key"


def start(kind: str, data: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    data.mkdir(parents=True)
    env = {
        **os.environ,
        "AVILA_DATA_DIR": str(data),
        "API_KEYS": KEY,
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "warning",
    }
    if kind == "uvicorn":
        cmd = [
            sys.executable,
            "-m",
            "avila.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    else:
        cmd = [
            sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host",
            "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "uvloop",
            "--no-ws", "--log-level", "warning", "avila.commands.serve:asgi_app",
        ]  # fmt: skip
    log = open(data / "server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=data)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError((data / "server.log").read_text())


def run_round(kind: str, tmp: Path, seconds: float) -> dict[str, float]:
    proc, port = start(kind, tmp / f"{kind}-{uuid.uuid4().hex[:6]}")
    host = "127.0.0.1"
    run_id = uuid.uuid4().hex[:8]
    marker = b"#" * 17
    template = loadgen.build_request(
        host, port, "/api/v1/events/batch", KEY, batch_template(100, marker)
    )
    try:
        loadgen.run(
            loadgen.closed_loop(
                host, port, 4, 1.0, lambda i: template.replace(marker, f"w{run_id}{i:08d}".encode())
            )
        )
        batch = loadgen.run(
            loadgen.closed_loop(
                host,
                port,
                16,
                seconds,
                lambda i: template.replace(marker, f"{run_id}{i:09d}".encode()),
            )
        )
        single = loadgen.run(
            loadgen.open_loop(
                host,
                port,
                1000,
                seconds,
                32,
                lambda i: loadgen.build_request(
                    host, port, "/api/v1/events", KEY, single_body(f"s{run_id}-{i}")
                ),
            )
        )
        seq = loadgen.run(
            loadgen.closed_loop(
                host,
                port,
                1,
                seconds,
                lambda i: loadgen.build_request(
                    host, port, "/api/v1/events", KEY, single_body(f"q{run_id}-{i}")
                ),
            )
        )
    finally:
        proc.terminate()
        proc.wait(60)
    return {
        "batch_events_per_s": batch.statuses.get(202, 0) * 100 / batch.seconds,
        "single_p50_ms": single.percentile(0.5) * 1000,
        "single_p99_ms": single.percentile(0.99) * 1000,
        "sequential_p50_ms": seq.percentile(0.5) * 1000,
        "errors": (batch.requests - batch.statuses.get(202, 0))
        + (single.requests - single.statuses.get(202, 0)),
    }


def main() -> None:
    import importlib.util

    if importlib.util.find_spec("granian") is None:
        sys.exit("bench_http_server needs granian: pip install 'granian>=2.5' (not a dependency)")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"uvicorn": [], "granian": []}
    with tempfile.TemporaryDirectory(prefix="avila-bench-http-") as tmp:
        for r in range(args.rounds):
            for kind in results:  # alternate, so drift in the machine's load hits both
                figures = run_round(kind, Path(tmp), args.seconds)
                results[kind].append(figures)
                print(
                    f"round {r + 1} {kind}: "
                    + ", ".join(f"{k}={v:,.2f}" for k, v in figures.items()),
                    flush=True,
                )
    lines = [
        "## HTTP tier: uvicorn vs granian (`python benchmarks/bench_http_server.py`)",
        "",
        stamp(),
        f"Machine: 2 cores, shared with other helpers' work while it ran. {args.rounds} rounds of {args.seconds:g} s"
        " per scenario, servers alternating, medians. Protocol in the script's docstring.",
        "",
        "| server | batch events/s | single p50 (ms) | single p99 (ms) | sequential p50 (ms) | errors |",
        "|---|---|---|---|---|---|",
    ]
    for kind, rounds in results.items():
        m = {k: statistics.median(f[k] for f in rounds) for k in rounds[0]}
        lines.append(
            f"| {kind} | {m['batch_events_per_s']:,.0f} | {m['single_p50_ms']:.2f} | {m['single_p99_ms']:.2f} | {m['sequential_p50_ms']:.2f} | {m['errors']:.0f} |"
        )
        print(lines[-1])
    if not args.no_write:
        write_section("bench_http_server", "\n".join(lines))


if __name__ == "__main__":
    main()
