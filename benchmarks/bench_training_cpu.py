"""CPU of one training run (``train_project``) on ``make run``'s demo data, in a fresh process.

The process starts without scikit-learn and SciPy, as the server's training worker does, so the
figure includes how their native thread pools are set up. CPU seconds (user + system of the
child), not wall time: the machine is shared.

    python benchmarks/bench_training_cpu.py [--rounds 3] [--src OTHER_TREE/src ...]

With ``--src`` each round runs every tree in turn (this checkout's ``src`` first), alternating,
so two versions are compared under the same load; medians are printed per tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trees import alternate, children_cpu, tree_arguments  # noqa: E402

#: ``make run``'s shop demo (Makefile, ``avila demo --if-empty --users 1000 --days 30``).
DEMO = ["demo", "--users", "1000", "--days", "30", "--end", "2026-11-30"]
TRAIN = (
    "import sys; from avila.storage import open_store; from avila.ml.training import train_project;"
    "s = open_store('duckdb:///' + sys.argv[1], read_only=True); train_project(s, 'default')"
)


def train_cpu(src: Path, database: Path) -> float:
    before = children_cpu()
    subprocess.run(
        [sys.executable, "-c", TRAIN, str(database)],
        env={**os.environ, "PYTHONPATH": str(src)},
        check=True,
    )
    return children_cpu() - before


def main() -> None:
    args = tree_arguments(__doc__.split("\n\n")[0], rounds=3)
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "AVILA_DATA_DIR": data}
        env.pop("AVILA_STORAGE_URL", None)
        print("generating the demo data ...", flush=True)
        subprocess.run([sys.executable, "-m", "avila.cli", *DEMO], env=env, check=True)
        copy = Path(data) / "bench.duckdb"  # read-only opens: one copy serves every round
        shutil.copy(Path(data) / "avila.duckdb", copy)
        alternate(args.trees, args.rounds, {"training": lambda tree: train_cpu(tree, copy)})


if __name__ == "__main__":
    main()
