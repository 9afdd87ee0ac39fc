"""Data that costs seconds to make and that several fixtures of one test run read unchanged."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A directory ``build`` filled once per test run. The xdist workers of a run share it:
    the first to ask builds it under a lock and the others wait for it (a worker's base
    directory lies inside the run's). Readers must copy it before they write."""
    run_dir = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_dir = run_dir.parent
    target, done = run_dir / name, run_dir / f"{name}.done"
    with open(run_dir / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)  # what a failed build left
            target.mkdir()
            build(target)
            done.touch()
    return target
