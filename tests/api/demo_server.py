"""A server like ``make run``'s: ``.env.example`` as its ``.env``, the default demo loaded.

``make run`` copies ``.env.example`` to ``.env`` (key ``dev-key-123`` from ``API_KEYS``), runs
``avila demo --if-empty --users 1000 --days 30`` and ``avila demo --factory --days 7``, then
``avila serve``. :func:`start_demo_server` does the same in a fresh directory.

The two demo commands cost ~7 CPU-s, and three fixtures of one run ask for this data (a
worker's ``demo_server`` on each xdist worker, the schemathesis server): the first one runs
them into a template directory the run's workers share, the others copy it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from avila.testing import ServerProcess
from tests.built_once import built_once

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
DEMO_COMMANDS = (
    ["demo", "--if-empty", "--users", "1000", "--days", "30"],
    ["demo", "--factory", "--days", "7"],
)


def demo_key() -> str:
    """The first key of ``.env.example``'s ``API_KEYS`` (the docs' ``dev-key-123``)."""
    keys = dotenv_values(ENV_EXAMPLE).get("API_KEYS") or ""
    return keys.split(",")[0].strip()


def _run_demo_commands(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ENV_EXAMPLE, data_dir / ".env")
    child_env = {
        k: v for k, v in os.environ.items() if k not in dotenv_values(ENV_EXAMPLE) or k == "PATH"
    }
    child_env["AVILA_DATA_DIR"] = str(data_dir)
    for args in DEMO_COMMANDS:
        subprocess.run(
            [sys.executable, "-m", "avila.cli", *args],
            cwd=data_dir,
            env=child_env,
            check=True,
            capture_output=True,
            timeout=300,
        )


def start_demo_server(factory: pytest.TempPathFactory, name: str, **env: str) -> ServerProcess:
    """A server on a fresh copy of the demo data, in a new directory named after ``name``."""
    data_dir = factory.mktemp(name)
    shutil.copytree(
        built_once(factory, "make-run-demo", _run_demo_commands), data_dir, dirs_exist_ok=True
    )
    server = ServerProcess(data_dir, env=env)
    # The test runner's environment must not override the .env the way a shell's would not.
    for setting in dotenv_values(ENV_EXAMPLE):
        if setting not in env and setting != "AVILA_DATA_DIR":
            server.env.pop(setting, None)
    return server.start(timeout=60)
