"""Shared fixtures: real server processes on free ports, each with its own data directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import settings as hypothesis_settings

from avila.testing import ServerProcess

TEST_KEY = "test-key-all-scopes"

# CI runs the same examples every time (a red build must be reproducible); local runs explore.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def server_for(factory: pytest.TempPathFactory, name: str, **env: str) -> Iterator[ServerProcess]:
    """A server in a new directory named after ``name`` for a module or session fixture to
    yield from: ``make_server``'s settings (the test key, no rate limit) updated by ``env``."""
    proc = ServerProcess(
        factory.mktemp(name), env={"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0", **env}
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared server for tests that only add data under unique ids (no rate limit)."""
    yield from server_for(tmp_path_factory, "shared-server", ENABLE_CORS="true")


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory for a dedicated server with extra settings: ``make_server(RATE_LIMIT_PER_MINUTE="3")``."""
    started: list[ServerProcess] = []

    def factory(data_dir: Path | None = None, **env: str) -> ServerProcess:
        settings = {"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0", **env}
        proc = ServerProcess(data_dir or tmp_path / f"server{len(started)}", env=settings)
        proc.start()
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """HTTP client for the shared server, authenticated with an all-scopes key."""
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
        yield c
