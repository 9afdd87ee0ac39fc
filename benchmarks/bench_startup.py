"""What a server start costs: CPU seconds to import the app, and to start ``avila serve`` until
``/health`` answers and stop it with SIGTERM (children included).

Every CLI command pays the import; every replica, restart and test server pays the start.
CPU seconds (user + system of the child processes), not wall time: the machine is shared.

    python benchmarks/bench_startup.py [--rounds 5] [--src OTHER_TREE/src ...]

With ``--src`` each round runs every tree in turn (this checkout's ``src`` first), alternating,
so two versions are compared under the same load; medians are printed per tree.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from avila.testing import ServerProcess

HERE = Path(__file__).resolve().parent.parent / "src"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def import_cpu(src: Path) -> float:
    before = _children_cpu()
    subprocess.run([sys.executable, "-c", "import avila.app, avila.cli"], env=_env(src), check=True)
    return _children_cpu() - before


def serve_cpu(src: Path) -> float:
    with tempfile.TemporaryDirectory() as data:
        server = ServerProcess(Path(data), env={"PYTHONPATH": str(src), "API_KEYS": "bench-key"})
        before = _children_cpu()
        server.start(timeout=120)
        server.stop(timeout=60)
        return _children_cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--src", type=Path, action="append", default=[], help="another tree's src")
    args = parser.parse_args()
    trees = [HERE, *args.src]
    figures: dict[Path, dict[str, list[float]]] = {t: {"import": [], "serve": []} for t in trees}
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for round_ in range(1, args.rounds + 1):
        for tree in trees:
            figures[tree]["import"].append(import_cpu(tree))
            figures[tree]["serve"].append(serve_cpu(tree))
            print(
                f"round {round_} {tree}: import {figures[tree]['import'][-1]:.2f} CPU-s,"
                f" serve start+stop {figures[tree]['serve'][-1]:.2f} CPU-s",
                flush=True,
            )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(f"{'tree':60} {'import (median)':>16} {'serve (median)':>15}")
    for tree in trees:
        imp = statistics.median(figures[tree]["import"])
        srv = statistics.median(figures[tree]["serve"])
        print(f"{str(tree):60} {imp:16.2f} {srv:15.2f}")


if __name__ == "__main__":
    main()
