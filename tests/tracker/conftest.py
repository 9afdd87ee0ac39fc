"""Fixtures for the browser tracker tests: a real server, a test site on another origin, and
Debian's Chromium driven by Playwright.

The Chromium tests fail (they do not skip) when the browser or Playwright is missing: CI must
install Debian's ``chromium`` package and the ``playwright`` Python package.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from avila.security.keys import KeyStore
from avila.testing import ServerProcess
from avila.testing.browser import browser_missing, chromium
from tests.static_site import site  # noqa: F401 - a fixture, shared with tests/web


class TrackedServer:
    """An avila server with CORS on and an ingest-only key (the kind a web page embeds)."""

    def __init__(self, data_dir: Path) -> None:
        self.ingest_key, _ = KeyStore(data_dir / "keys.sqlite").create("default", ["ingest"])
        self.read_key = "tracker-admin-key"
        self.data_dir = data_dir
        self.process = ServerProcess(
            data_dir,
            env={
                "API_KEYS": self.read_key,
                "RATE_LIMIT_PER_MINUTE": "0",
                "ENABLE_CORS": "true",
            },
        )

    @property
    def url(self) -> str:
        return self.process.url

    def stored(self) -> duckdb.DuckDBPyConnection:
        """Stop the server and open its store read-only (DuckDB admits one process)."""
        assert self.process.stop() == 0, self.process.log()
        return duckdb.connect(str(self.data_dir / "avila.duckdb"), read_only=True)


@pytest.fixture
def tracked_server(tmp_path: Path) -> Iterator[TrackedServer]:
    server = TrackedServer(tmp_path / "data")
    server.process.start()
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = browser_missing("the tracker tests")
    if problem:
        pytest.fail(problem, pytrace=False)
    with chromium() as launched:
        yield launched
