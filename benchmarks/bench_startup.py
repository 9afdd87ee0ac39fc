"""What a server start costs: CPU seconds to import the app, and to start ``avila serve`` until
``/health`` answers and stop it with SIGTERM (children included).

Every CLI command pays the import; every replica, restart and test server pays the start.
CPU seconds (user + system of the child processes), not wall time: the machine is shared.

    python benchmarks/bench_startup.py [--rounds 5] [--src OTHER_TREE/src ...]

With ``--src`` each round runs every tree in turn (this checkout's ``src`` first), alternating,
so two versions are compared under the same load; medians are printed per tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trees import alternate, children_cpu, tree_arguments  # noqa: E402

from avila.testing import ServerProcess  # noqa: E402


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def import_cpu(src: Path) -> float:
    before = children_cpu()
    subprocess.run([sys.executable, "-c", "import avila.app, avila.cli"], env=_env(src), check=True)
    return children_cpu() - before


def serve_cpu(src: Path) -> float:
    with tempfile.TemporaryDirectory() as data:
        server = ServerProcess(Path(data), env={"PYTHONPATH": str(src), "API_KEYS": "bench-key"})
        before = children_cpu()
        server.start(timeout=120)
        server.stop(timeout=60)
        return children_cpu() - before


def main() -> None:
    args = tree_arguments(__doc__.split("\n\n")[0], rounds=5)
    alternate(args.trees, args.rounds, {"import": import_cpu, "serve start+stop": serve_cpu})


if __name__ == "__main__":
    main()
