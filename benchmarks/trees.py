"""Compare source trees under the same load: every round measures each tree in turn (this
checkout's ``src`` first, then each ``--src``), so a busy moment falls on all of them alike.

Figures are CPU seconds of child processes (user + system), not wall time: the machine is
shared. Used by ``bench_startup.py`` and ``bench_training_cpu.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
from collections.abc import Callable
from pathlib import Path

#: This checkout's sources.
HERE = Path(__file__).resolve().parent.parent / "src"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_arguments(description: str, rounds: int) -> argparse.Namespace:
    """``--rounds`` and the repeatable ``--src OTHER_TREE/src``; ``trees`` lists them all."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--src", type=Path, action="append", default=[], help="another tree's src")
    args = parser.parse_args()
    args.trees = [HERE, *args.src]
    return args


def alternate(
    trees: list[Path], rounds: int, measures: dict[str, Callable[[Path], float]]
) -> dict[Path, dict[str, list[float]]]:
    """Run every measure on every tree, ``rounds`` times, alternating; print each figure as it
    comes and the medians at the end."""
    figures = {tree: {name: [] for name in measures} for tree in trees}
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for round_ in range(1, rounds + 1):
        for tree in trees:
            for name, measure in measures.items():
                figures[tree][name].append(measure(tree))
            said = ", ".join(f"{name} {figures[tree][name][-1]:.2f} CPU-s" for name in measures)
            print(f"round {round_} {tree}: {said}", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(f"{'tree (medians, CPU-s)':60}" + "".join(f" {name:>16}" for name in measures))
    for tree in trees:
        medians = "".join(f" {statistics.median(figures[tree][n]):16.2f}" for n in measures)
        print(f"{str(tree):60}{medians}")
    return figures
