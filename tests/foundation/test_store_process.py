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


def _thread_niceness(pid: int) -> set[int]:
    """The nice value of every thread of a process, from /proc (field 19 of each task's stat)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        values.add(int(stat.rsplit(")", 1)[1].split()[16]))
    return values


def test_store_process_and_all_its_threads_run_at_the_asked_niceness(tmp_path: Path) -> None:
    import os

    base = os.getpriority(os.PRIO_PROCESS, 0)
    store = ProcessStore(tmp_path / "store.duckdb", nice=7)
    try:
        # A query with DuckDB's worker threads busy, so they exist when we look.
        assert store.query("SELECT count(*) FROM range(1000000)")[0][0] == 1_000_000
        pid = store._process.pid
        assert pid is not None
        assert _thread_niceness(pid) == {min(19, base + 7)}
        assert os.getpriority(os.PRIO_PROCESS, 0) == base  # ours is unchanged
    finally:
        store.close()


def test_store_process_keeps_our_niceness_by_default(store: ProcessStore) -> None:
    import os

    pid = store._process.pid
    assert pid is not None
    assert _thread_niceness(pid) == {os.getpriority(os.PRIO_PROCESS, 0)}
