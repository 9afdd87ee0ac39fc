"""Fixtures for the analytics suite: a real store per backend, and row loading helpers.

The suite is backend-agnostic: it talks to :class:`avila.storage.Store` only. Every test runs
on each backend of :data:`avila.testing.backends.BACKENDS` (``duckdb``, ``chdb``, and ``clickhouse``
when ``CLICKHOUSE_URL`` names a live server); add a backend there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from analytics_data import to_table

from avila.storage import Store
from avila.testing.backends import BACKENDS, open_backend


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = open_backend(request.param, tmp_path)
    yield opened
    opened.close()


@pytest.fixture(scope="module", params=BACKENDS)
def module_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """One store per test module, for read-only tests over a shared generated data set."""
    opened = open_backend(request.param, tmp_path_factory.mktemp("analytics"))
    yield opened
    opened.close()


@pytest.fixture
def load(store: Store) -> Callable[[list[dict[str, Any]]], Store]:
    """``load(rows)`` appends rows (dicts of event columns) to ``store`` and returns it."""

    def _load(rows: list[dict[str, Any]]) -> Store:
        store.append_events(to_table(rows))
        return store

    return _load
