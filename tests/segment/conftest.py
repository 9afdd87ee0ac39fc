"""Fixtures for the Segment API tests: dedicated servers whose stored rows are read back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from .live import LiveServer


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path / "data")
    live.process.start()
    yield live
    live.process.stop()


@pytest.fixture(scope="module")
def shared_live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """For tests that only look at responses (never :meth:`LiveServer.stored`)."""
    live = LiveServer(tmp_path_factory.mktemp("segment") / "data")
    live.process.start()
    yield live
    live.process.stop()


@pytest.fixture
def rows() -> Callable[[duckdb.DuckDBPyConnection, str], list[dict]]:
    def query(conn: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
        cursor = conn.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return query
