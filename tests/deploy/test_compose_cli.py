"""The compose files through a real Compose implementation: Debian's docker-compose 1.29
(`.ci/run` installs it) validates them against the Compose specification's schema and resolves
them without a Docker daemon. Run with an empty environment, so the defaults are what counts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import DEPLOY, compose

FILES = ("docker-compose.yml", "docker-compose.embedded.yml")


def docker_compose(compose_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: install the Debian package (see .ci/run)"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(compose_file.parent)}
    return subprocess.run(
        [binary, "-f", str(compose_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=compose_file.parent,
    )


@pytest.mark.parametrize("name", FILES)
def test_compose_file_is_valid(name: str) -> None:
    result = docker_compose(DEPLOY / name, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_a_misspelt_key_is_refused(tmp_path: Path) -> None:
    """The validation above can fail: the schema refuses an unknown health-check key."""
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    path = copy / "docker-compose.yml"
    text = path.read_text()
    assert "      retries: 20\n" in text
    path.write_text(text.replace("      retries: 20\n", "      retriez: 20\n", 1))
    result = docker_compose(path, "config", "-q")
    assert result.returncode != 0 and "retriez" in result.stderr


def test_compose_resolves_the_environment_as_the_tests_read_it() -> None:
    result = docker_compose(DEPLOY / "docker-compose.yml", "--profile", "monitoring", "config")
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    ours = compose()
    assert set(resolved["services"]) == set(ours["services"])
    for name, service in ours["services"].items():
        theirs = resolved["services"][name].get("environment", {})
        mine = {k: str(v) for k, v in service.get("environment", {}).items()}
        assert {k: str(v) for k, v in theirs.items()} == mine, name
