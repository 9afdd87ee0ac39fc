"""Server memory while a model trains: training in a process of its own vs in a server thread.

Protocol (fixed before the runs): the e-commerce demo (seed 42, ``--users`` users over
``--days`` days) is written once through the ingestion path. Each round copies it into a
fresh data directory, starts ``avila serve`` on a free port (nothing else runs) and calls
``POST /api/v1/ml/train`` once, either with the defaults (training runs in its own process,
``AVILA_QUERY_WORKERS=2``) or with ``AVILA_QUERY_WORKERS=0`` (training in a server thread).
Rounds alternate between the two, ``--rounds`` of each. Reported per round: the server
process's resident memory before training, its peak (VmHWM) and resident memory after training,
the largest resident memory any other child process (the training process) reached while
training (sampled every 0.1 s), and the training time. Medians per configuration.

    python benchmarks/bench_training_memory.py --users 2000 --days 60 --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predictions import KEY, write_demo  # noqa: E402

from avila.testing import ServerProcess  # noqa: E402

CONFIGS = {
    "own process (default)": {},
    "server thread (AVILA_QUERY_WORKERS=0)": {"AVILA_QUERY_WORKERS": "0"},
}


def _status_mb(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def one_round(demo: Path, env: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="avila-bench-train-") as tmp:
        data = Path(tmp)
        shutil.copyfile(demo, data / "avila.duckdb")
        server = ServerProcess(
            data, env={"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "warning", **env}
        )
        server.start(timeout=300)
        try:
            assert server.proc is not None
            pid = server.proc.pid
            before = _status_mb(pid, "VmRSS")
            stores = set(server.store_pids())
            peak_other = 0.0
            done = threading.Event()

            def sample() -> None:
                nonlocal peak_other
                while not done.wait(0.1):
                    for child in server.children():
                        if child not in stores:
                            peak_other = max(peak_other, _status_mb(child, "VmRSS"))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=1800) as c:
                c.post("/api/v1/ml/train").raise_for_status()
            seconds = time.perf_counter() - started
            done.set()
            sampler.join()
            return {
                "server RSS before (MB)": before,
                "server peak (MB)": _status_mb(pid, "VmHWM"),
                "server RSS after (MB)": _status_mb(pid, "VmRSS"),
                "training process peak RSS (MB)": peak_other,
                "training (s)": seconds,
            }
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avila-bench-train-demo-") as tmp:
        demo = Path(tmp) / "demo.duckdb"
        write_demo(demo, args.users, args.days)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
        for n in range(args.rounds):
            for name, env in CONFIGS.items():
                figures = one_round(demo, env)
                print(f"round {n + 1}, {name}: {figures}", file=sys.stderr)
                results[name].append(figures)
    names = list(next(iter(results.values()))[0])
    print(f"demo: {args.users:,} users, {args.days} days; {args.rounds} rounds each, alternating")
    print("| | " + " | ".join(CONFIGS) + " |")
    print("|---|" + "---|" * len(CONFIGS))
    for figure in names:
        cells = []
        for name in CONFIGS:
            values = [r[figure] for r in results[name]]
            each = " / ".join(f"{v:,.0f}" for v in values)
            cells.append(f"**{statistics.median(values):,.0f}** ({each})")
        print(f"| {figure} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
