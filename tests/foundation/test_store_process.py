"""The store process (DuckDB in a child process) behind the Store interface."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

import duckdb
import pytest

from avila.errors import StorageUnavailable
from avila.storage.duckdb.channels import RemoteReader
from avila.storage.duckdb.process import BACKGROUND_NICE, READ_CHANNELS, ProcessStore
from avila.storage.duckdb.store import DuckDBStore


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


def test_a_stream_closed_early_stops_its_query(store: ProcessStore) -> None:
    """A client that leaves an export mid-way closes the stream: the store process stops
    producing rows (rather than sending, and the reader draining, the rest of the result), and
    a cancel that arrives after a stream ended by itself is ignored. A 10-billion-row result
    read to its end would take hours: a close that returns shows the query stopped."""
    huge = "SELECT range AS n FROM range(10000000000)"
    for _ in range(READ_CHANNELS * 2):
        stream = store.query_batches(huge, [], batch_rows=4_096)
        assert next(stream).num_rows == 4_096
        _within(120, stream.close)
    # a stream that ended by itself, then a stray cancel on its channel: still answers right
    small = store.query_batches("SELECT range AS n FROM range(?)", [10], batch_rows=4_096)
    assert next(small).num_rows == 10
    small.close()
    for _ in range(READ_CHANNELS * 2):
        assert store.query("SELECT 42")[0][0] == 42


def test_query_errors_come_back_as_duckdb_errors(store: ProcessStore) -> None:
    import duckdb

    with pytest.raises(duckdb.Error):
        store.query("SELECT * FROM no_such_table")
    store.ping()  # the channel survives the error


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread; a hang (not a slow answer) fails the test instead of the suite."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(("ok", fn()))
        except BaseException as exc:
            box.append(("err", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, "no answer: the listener is held up by a client that never answered"
    status, value = box[0]
    if status == "err":
        raise value
    return value


def test_a_silent_or_keyless_client_does_not_keep_query_workers_out(store: ProcessStore) -> None:
    """Anyone on the host can reach the store process's abstract socket: without the key they
    are refused, and one that connects and never answers holds up no one else."""
    assert store.read_address is not None
    address, key = store.read_address
    with socket.socket(socket.AF_UNIX) as silent:
        silent.connect(address)
        with pytest.raises(AuthenticationError):
            _within(60, lambda: Client(address, family="AF_UNIX", authkey=b"not the key"))
        reader = _within(60, lambda: RemoteReader(address, key))
        try:
            assert reader.query("SELECT 42")[0][0] == 42
            with pytest.raises(StorageUnavailable, match="read-only"):
                reader.execute("DELETE FROM events")
        finally:
            reader.close()


@pytest.mark.parametrize("where", ["in the store process", "in process"])
def test_execute_all_is_one_transaction(tmp_path: Path, where: str) -> None:
    """All statements or none: a failing one rolls back those before it (GDPR erase runs the
    rollups' negation and the events' delete this way)."""
    path = tmp_path / "store.duckdb"
    store = ProcessStore(path) if where == "in the store process" else DuckDBStore(path)
    try:
        store.execute("CREATE TABLE t (x INTEGER)")
        assert store.execute_all(
            [("INSERT INTO t VALUES (?), (?)", [1, 2]), ("DELETE FROM t WHERE x = ?", [1])]
        ) == [2, 1]
        with pytest.raises(duckdb.Error):
            store.execute_all(
                [("INSERT INTO t VALUES (?)", [3]), ("INSERT INTO no_such_table VALUES (1)", [])]
            )
        assert store.query("SELECT x FROM t ORDER BY x") == [(2,)]
        store.execute_all([("INSERT INTO t VALUES (?)", [4])])  # still usable
        assert store.query("SELECT count(*) FROM t")[0][0] == 2
    finally:
        store.close()


def test_a_query_worker_has_waiting_sessions_cut_by_the_store_process(
    store: ProcessStore,
) -> None:
    """A small write leaves its sessions to be cut later (avila.storage.session_table.Upkeep);
    a read-only query worker asks the store process to cut them before it reads."""
    import pyarrow as pa

    from avila.storage.schema import EVENT_SCHEMA

    at = datetime(2025, 1, 1)
    rows = {name: [None] * 3 for name in EVENT_SCHEMA.names}
    rows.update(
        project_id=["p"] * 3,
        event_id=["e1", "e2", "e3"],
        user_id=["u", "u", "v"],
        ts=[at, at + timedelta(minutes=10), at],
        received_at=[at] * 3,
        event_type=["page_view"] * 3,
    )
    store.append_events(pa.table(rows, schema=EVENT_SCHEMA))
    assert store.query("SELECT count(*) FROM kept_pending") == [(3,)]
    assert store.read_address is not None
    reader = RemoteReader(*store.read_address)
    try:
        reader.settle_kept_sessions()
    finally:
        reader.close()
    assert store.query("SELECT count(*) FROM kept_pending") == [(0,)]
    assert store.query("SELECT user_id, events FROM kept_sessions ORDER BY 1") == [
        ("u", 2),
        ("v", 1),
    ]


def _niceness(pid: int) -> dict[int, int]:
    """Each thread of ``pid`` and its niceness (field 19 of its ``stat``)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        found[int(task.name)] = int(fields[16])
    return found


def test_duckdb_and_query_worker_threads_run_below_the_servers_priority(tmp_path: Path) -> None:
    """On two cores a heavy report's DuckDB threads took CPU from the event loop that
    acknowledges events: DuckDB's worker threads and the threads serving query workers run at
    a lower priority; the threads serving the server (writes, its own reads) do not."""
    store = ProcessStore(tmp_path / "store.duckdb", threads=2)
    try:
        assert store.pid is not None and store.read_address is not None
        base = os.getpriority(os.PRIO_PROCESS, store.pid)  # the store's main thread
        lowered = base + BACKGROUND_NICE
        before = _niceness(store.pid)
        assert lowered in before.values()  # DuckDB's worker threads
        assert store.query("SELECT 42")[0][0] == 42
        store.execute("CREATE TABLE t AS SELECT 1 AS x")
        # the server's channels (served by threads that existed before) keep their priority
        at_base = {tid for tid, nice in _niceness(store.pid).items() if nice == base}
        assert {tid for tid, nice in before.items() if nice == base} <= at_base

        reader = RemoteReader(*store.read_address)
        try:
            assert reader.query("SELECT count(*) FROM t")[0][0] == 1
            after = _niceness(store.pid)
            serving = set(after) - set(before) - at_base
            assert serving, "no thread serves the query worker"
            assert {after[tid] for tid in serving} == {lowered}
        finally:
            reader.close()
    finally:
        store.close()


def test_a_ping_right_after_the_store_process_is_killed_says_it_exited(tmp_path: Path) -> None:
    """SIGKILL breaks the channels a moment before the process can be reaped: a ping in that
    moment (a /health request) must still say the process exited, which is what an operator
    needs to read in the log, not only that a pipe broke."""
    import signal

    for attempt in range(3):
        store = ProcessStore(tmp_path / f"killed-{attempt}.duckdb")
        try:
            store.ping()
            assert store.pid is not None
            os.kill(store.pid, signal.SIGKILL)
            with pytest.raises(StorageUnavailable, match="store process has exited"):
                store.ping()
        finally:
            store.close()
