"""Training runs with one OpenMP and one BLAS thread, also in a process that has not imported
scikit-learn or SciPy yet (the server imports them only when a model is fitted).

threadpoolctl limits only the native runtimes already loaded. When scikit-learn came to be
imported inside the fit, its OpenMP runtime kept one thread per core: beside the server, the
spinning threads made a training of ``make run``'s data cost 22 CPU-s instead of 10 on a
quiet machine, and ~150 on a busy one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from threadpoolctl import threadpool_info
from avila.ml.training import InsufficientTrainingData, train_project
from avila.storage import open_store

assert "sklearn" not in sys.modules and "scipy" not in sys.modules
seen = []

def progress(stage):
    if not seen:  # inside the training, as the fits import them:
        import scipy.linalg, sklearn.ensemble
        seen.extend((i["internal_api"], i["num_threads"]) for i in threadpool_info())

store = open_store("duckdb:///" + sys.argv[1])
try:
    train_project(store, "default", progress=progress)
except InsufficientTrainingData:
    pass
finally:
    store.close()
print(json.dumps(seen))
"""


def test_training_limits_the_runtimes_it_loads_itself(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "empty.duckdb")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pools = json.loads(done.stdout)
    assert "openmp" in {api for api, _ in pools}  # scikit-learn's runtime is loaded...
    assert all(threads == 1 for _, threads in pools), pools  # ... and limited
