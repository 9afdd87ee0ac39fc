"""Experiment results at scale: the one results query plus the statistics, on the analytics
benchmark's synthetic events.

    .venv/bin/python benchmarks/bench_experiments.py                 # 10 M events (cached)
    .venv/bin/python benchmarks/bench_experiments.py --events 1000000 --runs 5

Uses (and, the first time, builds) the same cached DuckDB file as bench_analytics.py. Two
experiments over the last 30 days of data: conversion to purchase with every event as exposure
(the heaviest case: every active user is exposed and hashed), and revenue per user exposed by
page views. Prints the median wall time of ``results()`` after one warm-up, the exposed users,
and writes the figures into benchmarks/RESULTS.md (section ``bench_experiments``).
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path

import msgspec
from bench_analytics import END, PROJECT, generate, median_seconds
from results import stamp, write_section

from avila.experiments import ExperimentRepository, ExperimentSpec, results
from avila.storage import open_store

SPECS = {
    "conversion, any event exposes": {
        "key": "bench-conversion",
        "variants": [{"name": "control", "weight": 1}, {"name": "b", "weight": 1}],
        "goal": {"type": "conversion", "condition_type": "purchase", "condition_value": ""},
    },
    "revenue, page views expose": {
        "key": "bench-revenue",
        "variants": [
            {"name": "control", "weight": 2},
            {"name": "b", "weight": 1},
            {"name": "c", "weight": 1},
        ],
        "goal": {"type": "revenue"},
        "exposure": {"condition_type": "page_view", "condition_value": ""},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("data/bench"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    path = args.dir / f"analytics_{args.events}.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists()
    store = open_store("duckdb:///" + str(path))
    if fresh:
        t0 = time.perf_counter()
        generate(store, args.events)
        print(f"generated {args.events:,} events in {time.perf_counter() - t0:.1f} s -> {path}")
    repo = ExperimentRepository(store)
    window = {"start_time": END - timedelta(days=30), "end_time": END}
    lines = [
        stamp(),
        "",
        f"{args.events:,} events; median of {args.runs} runs after a warm-up; machine: 2 cores,"
        " shared with other jobs (load average about 20 when recorded on 2026-11-30).",
        "",
        "| experiment | exposed users | results (s) |",
        "|---|---:|---:|",
    ]
    for label, body in SPECS.items():
        spec = msgspec.convert({**body, **window}, ExperimentSpec)
        if not store.query(
            "SELECT 1 FROM experiments WHERE project_id = ? AND key = ?", [PROJECT, spec.key]
        ):
            repo.create(PROJECT, spec)
        experiment = repo.get(PROJECT, spec.key)
        exposed = results(store, experiment)["exposed_total"]
        seconds = median_seconds(lambda e=experiment: results(store, e), args.runs)  # type: ignore[misc]
        print(f"{label:<34}{exposed:>10,} users{seconds:>9.3f} s")
        lines.append(f"| {label} | {exposed:,} | {seconds:.3f} |")
    store.close()
    if not args.no_write:
        write_section("bench_experiments", "\n".join(lines))


if __name__ == "__main__":
    main()
