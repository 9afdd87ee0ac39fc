"""The store process (DuckDB in a child process) behind the Store interface."""

from __future__ import annotations

from pathlib import Path

import pytest

from avila.storage.duckdb.process import READ_CHANNELS, ProcessStore


@pytest.fixture
def store(tmp_path: Path):  # noqa: ANN201
    opened = ProcessStore(tmp_path / "store.duckdb")
    yield opened
    opened.close()


def test_abandoned_stream_leaves_every_read_channel_usable(store: ProcessStore) -> None:
    sql = "SELECT range AS n FROM range(?)"
    # Stop each stream after its first batch, on every channel, then use them all again: a
    # channel handed back with unread frames would answer the next call with stale data.
    for _ in range(READ_CHANNELS * 2):
        stream = store.query_batches(sql, [50_000], batch_rows=1_000)
        assert next(stream).num_rows == 1_000
        stream.close()
    for _ in range(READ_CHANNELS * 2):
        assert store.query("SELECT 42")[0][0] == 42
        assert sum(b.num_rows for b in store.query_batches(sql, [3_000], batch_rows=1_000)) == 3_000


def test_query_errors_come_back_as_duckdb_errors(store: ProcessStore) -> None:
    import duckdb

    with pytest.raises(duckdb.Error):
        store.query("SELECT * FROM no_such_table")
    store.ping()  # the channel survives the error
