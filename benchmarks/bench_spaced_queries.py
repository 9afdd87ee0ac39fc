"""Issue 13's reports asked a few seconds apart, as a dashboard asks a server, in a fresh process.

    .venv/bin/python benchmarks/bench_spaced_queries.py --dir /work/benchdata --events 100000000

``bench_analytics.py`` times each report back to back after a warm-up; a server is asked at a
human pace. Between two questions the process (and, on a VM, the guest kernel) may hand freed
memory back, and the next question pays for getting it again. Per round and per arm, a fresh
child process opens the bench store (read-only, built by ``bench_analytics.py``) and calls
each of the six reports ``--calls`` times, sleeping ``--gap`` seconds before each call. It
prints, per report, the first call's wall and CPU seconds (cold: the first question after the
server started) and the median of the others (spaced), then their sums.

The arms differ only in the environment of the child: ``--arm NAME=VAR=VALUE`` (several; the
default compares numpy's ``NUMPY_MADVISE_HUGEPAGE=1``, transparent huge pages for large arrays,
with ``=0``, plain pages). Arms alternate within each round. Writes nothing: the figures go
into RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def reports(store: Any) -> list[tuple[str, Callable[[], Any]]]:
    """Issue 13's six rows: ``bench_analytics.clickhouse_cases``' questions, ours only (the
    ClickHouse side is never called, so it needs no engine)."""
    from bench_analytics import clickhouse_cases

    return [(name, mine) for name, mine, _theirs in clickhouse_cases(store, None)]


def child(path: Path, calls: int, gap: float) -> None:
    """Runs in the child process: every report ``calls`` times, JSON on stdout."""
    sys.path.insert(0, str(HERE))
    from avila.storage import open_store

    store = open_store("duckdb:///" + str(path), read_only=True)
    out: dict[str, list[tuple[float, float]]] = {}
    for name, call in reports(store):
        times = []
        for _ in range(calls):
            time.sleep(gap)
            t0, c0 = time.perf_counter(), time.process_time()
            call()
            times.append((time.perf_counter() - t0, time.process_time() - c0))
        out[name] = times
    store.close()
    print(json.dumps(out))


def _arm(text: str) -> tuple[str, str, str]:
    name, _, setting = text.partition("=")
    var, _, value = setting.partition("=")
    if not (name and var and value):
        raise argparse.ArgumentTypeError(f"--arm takes NAME=VAR=VALUE, not {text!r}")
    return name, var, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("data/bench"))
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--calls", type=int, default=4, help="calls per report (the first is cold)")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds of sleep before each call")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arm", type=_arm, action="append", default=[])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = args.dir / f"analytics_{args.events}.duckdb"
    if args.child:
        child(path, args.calls, args.gap)
        return
    if not path.exists():
        sys.exit(f"{path} does not exist: build it with bench_analytics.py --events {args.events}")
    if args.calls < 2:
        sys.exit("--calls must be at least 2 (the first call is reported apart)")
    arms = args.arm or [
        ("hugepages", "NUMPY_MADVISE_HUGEPAGE", "1"),
        ("plain", "NUMPY_MADVISE_HUGEPAGE", "0"),
    ]
    print(
        f"{path}: {args.calls} calls per report, {args.gap:g} s before each, fresh process per arm"
    )
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    for r in range(1, args.rounds + 1):
        for name, var, value in arms:
            env = {**os.environ, var: value}
            command = [sys.executable, __file__, "--child", "--dir", str(args.dir),
                       "--events", str(args.events), "--calls", str(args.calls),
                       "--gap", str(args.gap)]  # fmt: skip
            found = json.loads(subprocess.run(command, env=env, check=True,
                                              capture_output=True, text=True).stdout)  # fmt: skip
            print(f"round {r}, arm {name} ({var}={value}): wall s first / spaced median"
                  " (CPU s first / spaced median)")  # fmt: skip
            first_sum = spaced_sum = 0.0
            for report, times in found.items():
                first, rest = times[0], times[1:]
                spaced = statistics.median(w for w, _ in rest)
                spaced_cpu = statistics.median(c for _, c in rest)
                first_sum += first[0]
                spaced_sum += spaced
                print(f"  {report:<26}{first[0]:>8.3f}{spaced:>8.3f}"
                      f"   ({first[1]:.3f} / {spaced_cpu:.3f})")  # fmt: skip
            print(f"  {'sum':<26}{first_sum:>8.3f}{spaced_sum:>8.3f}")
    print("load average at end (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
