"""schemathesis (every check) over every operation of /openapi.json against a real server.

The server is ``make run``'s (``.env.example``, default demo data). The run is derandomized
and bounded (``MAX_EXAMPLES`` per operation, fuzzing and stateful phases) so it is the same
every time; the relaxations it needs are written down, with reasons, in schemathesis.toml.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from avila.testing import ServerProcess
from tests.api.demo_server import demo_key, start_demo_server

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 4
# Every check runs: schemathesis.toml enables them all ([checks] enabled = true) and names the
# few per-operation relaxations (the CLI's --checks would override those).
PHASES = "examples,fuzzing,stateful"


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Its own demo server: the run writes garbage and deletes users."""
    server = start_demo_server(tmp_path_factory, "schemathesis", RATE_LIMIT_PER_MINUTE="0")
    yield server
    server.stop()


def test_every_operation_conforms(fuzzed_server: ServerProcess, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[auth.openapi.ApiKeyHeader]\napi_key = "{demo_key()}"\n\n' + CONFIG.read_text()
    )
    operations = len(
        [
            (path, method)
            for path, item in httpx.get(fuzzed_server.url + "/openapi.json").json()["paths"].items()
            for method in item
        ]
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "--no-color",
            "run",
            fuzzed_server.url + "/openapi.json",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--phases",
            PHASES,
            "--generation-deterministic",
            "--request-timeout",
            "120",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    tested = re.search(r"Tested:\s+(\d+)", output)
    assert tested and int(tested.group(1)) == operations, output[-3000:]
    assert result.returncode == 0, output[-20000:]
    assert re.search(r"\d+ passed", output), output[-3000:]
