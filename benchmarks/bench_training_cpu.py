"""CPU of one training run (``train_project``) on ``make run``'s demo data, in a fresh process.

The process starts without scikit-learn and SciPy, as the server's training worker does, so the
figure includes how their native thread pools are set up. CPU seconds (user + system of the
child), not wall time: the machine is shared.

    python benchmarks/bench_training_cpu.py [--rounds 3] [--src OTHER_TREE/src ...]

With ``--src`` each round runs every tree in turn (this checkout's ``src`` first), alternating,
so two versions are compared under the same load; medians are printed per tree.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "src"
#: ``make run``'s shop demo (Makefile, ``avila demo --if-empty --users 1000 --days 30``).
DEMO = ["demo", "--users", "1000", "--days", "30", "--end", "2026-11-30"]
TRAIN = (
    "import sys; from avila.storage import open_store; from avila.ml.training import train_project;"
    "s = open_store('duckdb:///' + sys.argv[1], read_only=True); train_project(s, 'default')"
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_cpu(src: Path, database: Path) -> float:
    before = _children_cpu()
    subprocess.run(
        [sys.executable, "-c", TRAIN, str(database)],
        env={**os.environ, "PYTHONPATH": str(src)},
        check=True,
    )
    return _children_cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", type=Path, action="append", default=[], help="another tree's src")
    args = parser.parse_args()
    trees = [HERE, *args.src]
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "AVILA_DATA_DIR": data}
        env.pop("AVILA_STORAGE_URL", None)
        print("generating the demo data ...", flush=True)
        subprocess.run([sys.executable, "-m", "avila.cli", *DEMO], env=env, check=True)
        database = Path(data) / "avila.duckdb"
        copy = Path(data) / "bench.duckdb"  # read-only opens: one copy serves every round
        shutil.copy(database, copy)
        figures: dict[Path, list[float]] = {t: [] for t in trees}
        print(f"load average at start: {os.getloadavg()[0]:.1f}")
        for round_ in range(1, args.rounds + 1):
            for tree in trees:
                figures[tree].append(train_cpu(tree, copy))
                print(f"round {round_} {tree}: {figures[tree][-1]:.1f} CPU-s", flush=True)
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(f"{'tree':60} {'training CPU-s (median)':>24}")
    for tree in trees:
        print(f"{str(tree):60} {statistics.median(figures[tree]):24.1f}")


if __name__ == "__main__":
    main()
