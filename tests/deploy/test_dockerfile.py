"""deploy/Dockerfile, checked without Docker: the package builds from exactly the files the
image copies, the wheel holds what ``avila serve`` needs, and the command, port and health check
agree with the package and with our settings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from avila.config import Settings
from tests.deploy.deploy_files import DEPLOY, ROOT

DOCKERFILE = (DEPLOY / "Dockerfile").read_text()


def instructions(keyword: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        line[len(keyword) :].strip()
        for line in joined.splitlines()
        if line.startswith(keyword + " ")
    ]


def test_package_builds_from_the_copied_files_alone(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for copy in instructions("COPY"):
        *sources, _dest = copy.split()
        for source in sources:
            origin = ROOT / source
            target = context / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, target)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
        + ["-w", str(wheels), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("avila_analytics-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "avila/cli.py" in names and "avila/storage/base.py" in names
    assert any(n.startswith("avila/static/") for n in names)
    assert any(n.startswith("avila/web/") for n in names)
    assert re.search(r"^avila = avila\.cli:main$", scripts, re.M)


def test_command_port_and_health_check_agree() -> None:
    assert instructions("CMD") == ['["avila", "serve"]']
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["avila"] == "avila.cli:main"
    (base,) = instructions("FROM")
    version = re.match(r"python:(\d+)\.(\d+)-", base)
    assert version, base
    required = re.match(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert required
    assert tuple(map(int, version.groups())) >= tuple(map(int, required.groups()))
    (exposed,) = instructions("EXPOSE")
    env = " ".join(instructions("ENV"))
    assert f"PORT={exposed}" in env and f"HOST={Settings.host}" in env
    assert "AVILA_DATA_DIR=/data" in env and instructions("VOLUME") == ['["/data"]']
    (health,) = instructions("HEALTHCHECK")
    assert f"http://127.0.0.1:{exposed}/health" in health
    assert instructions("USER") and instructions("USER") != ["root"]


def _pattern(rule: str) -> re.Pattern[str]:
    body = re.escape(rule.rstrip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
    return re.compile(body)


def sent_to_docker(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching line wins, a match on a parent directory
    counts, ``!`` re-includes."""
    rules = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for rule in rules:
        negated = rule.startswith("!")
        pattern = _pattern(rule.lstrip("!"))
        if any(pattern.fullmatch(p) for p in prefixes):
            excluded = not negated
    return not excluded


def test_build_context_holds_what_the_image_copies_and_nothing_else() -> None:
    copied = [s for copy in instructions("COPY") for s in copy.split()[:-1]]
    for source in copied:
        assert sent_to_docker(source), source
    assert sent_to_docker("src/avila/cli.py") and sent_to_docker("src/avila/web/index.html")
    for path in (".venv/bin/python", ".git/HEAD", "data/avila.duckdb", "tests/conftest.py"):
        assert not sent_to_docker(path), path
    assert not sent_to_docker("src/avila/__pycache__/cli.cpython-311.pyc")
