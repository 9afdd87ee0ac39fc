"""A/B of analytics code: ``bench_analytics.py --no-clickhouse`` on two or more source trees,
each round running every tree once in a fresh process, alternating (A B A B ...), so a busy
moment of a shared machine falls on all of them alike.

    .venv/bin/python benchmarks/ab_analytics.py --dir /work/benchdata/O --events 100000000 \\
        --only "funnel" --rounds 3 --tree before=/work/A/src --tree after=src

Protocol (fixed here, before any run): this checkout's ``bench_analytics.py`` runs for every
tree (only the product code under ``PYTHONPATH`` differs), ``--runs`` timed runs after a
warm-up in each process; a tree's figure for a row is the median over its rounds of the
process's median; the ratio is each tree's figure over the first tree's. Every round's
figures are printed as they come. The kept/dropped rule of an A/B is the caller's, written down
before the run (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from trees import HERE

BENCH = Path(__file__).resolve().parent / "bench_analytics.py"


def parse_rows(output: str) -> dict[str, tuple[float, float]]:
    """``{row: (wall s, CPU s)}`` from the "ours alone" table ``bench_analytics.py
    --no-clickhouse`` prints (row names may hold spaces; the two figures end the line)."""
    rows: dict[str, tuple[float, float]] = {}
    table = False
    for line in output.splitlines():
        if line.startswith("query") and line.split()[-2:] == ["cpu", "ours"]:
            table = True
            continue
        if table:
            if line.startswith("load average"):
                break
            name, wall, cpu = line[:26].strip(), *line[26:].split()
            rows[name] = (float(wall), float(cpu))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="bench_analytics.py's --dir")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--only", required=True, help="bench_analytics.py's --only")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="a source tree's src directory (repeat; default: this checkout's src as 'this')",
    )
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("this", str(HERE))]
    if any(len(t) != 2 for t in trees):
        parser.error("--tree takes LABEL=SRC")
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {label: {} for label, _ in trees}
    print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    for round_ in range(1, args.rounds + 1):
        for label, src in trees:
            command = [
                sys.executable, str(BENCH), "--dir", str(args.dir), "--events", str(args.events),
                "--runs", str(args.runs), "--no-clickhouse", "--only", args.only,
            ]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            rows = parse_rows(done.stdout)
            for name, figure in rows.items():
                figures[label].setdefault(name, []).append(figure)
            said = ", ".join(
                f"{name} {wall:.3f} s ({cpu:.3f} CPU-s)" for name, (wall, cpu) in rows.items()
            )
            print(f"round {round_} {label}: {said}", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    first = trees[0][0]
    print(
        f"{'row':<28}{'tree':<12}{'wall s':>8}{'ratio':>7}{'CPU s':>8}{'ratio':>7}  rounds (wall)"
    )
    for name in figures[first]:
        base_wall = statistics.median(w for w, _ in figures[first][name])
        base_cpu = statistics.median(c for _, c in figures[first][name])
        for label, _ in trees:
            got = figures[label].get(name, [])
            if not got:
                continue
            wall = statistics.median(w for w, _ in got)
            cpu = statistics.median(c for _, c in got)
            each = " / ".join(f"{w:.3f}" for w, _ in got)
            print(f"{name:<28}{label:<12}{wall:>8.3f}{wall / base_wall:>7.2f}{cpu:>8.3f}"
                  f"{cpu / base_cpu:>7.2f}  {each}")  # fmt: skip


if __name__ == "__main__":
    main()
