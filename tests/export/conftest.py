"""Fixtures of the export and import tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.export.test_import_cli import use_store


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DuckDB store for direct (no server) commands, the working directory its parent."""
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "data"
    use_store(monkeypatch, directory, "duckdb")
    return directory
