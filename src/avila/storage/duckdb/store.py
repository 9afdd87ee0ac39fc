"""DuckDB file store.

One connection per process (DuckDB allows one writing process per file); writes are serialised
by a lock and each is one transaction, which DuckDB fsyncs on commit. Reads use a cursor per
thread so heavy queries run off the event loop in parallel with ingestion.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from avila.errors import StorageUnavailable
from avila.storage.base import Store
from avila.storage.duckdb.migrations import migrate
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA

CHECKPOINT_THRESHOLD = "256MB"


class DuckDBStore(Store):
    backend = "duckdb"

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        threads: int | None = None,
        lock_wait: float = 15.0,
        memory_limit: str = "",
    ) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Checkpoints (WAL folded into the main file) stall every commit while they run; fewer,
        # larger ones cost less in total (256 MB measured best against 16 MB, 64 MB and 1 GB:
        # benchmarks/RESULTS.md). The WAL is still fsynced on every commit; the price is up to
        # 256 MB of WAL to replay after a crash.
        config: dict[str, Any] = {"checkpoint_threshold": CHECKPOINT_THRESHOLD}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._conn = self._connect(read_only, config, lock_wait)
        if not read_only:
            migrate(self._conn)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False

    def _connect(
        self, read_only: bool, config: dict[str, Any], lock_wait: float
    ) -> duckdb.DuckDBPyConnection:
        # A store process of a killed server may still hold the file for a moment while it
        # finishes its last commit and exits: wait for the lock rather than fail at once.
        deadline = time.monotonic() + lock_wait
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config=config)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise StorageUnavailable(
                        f"cannot open DuckDB file {self.path} (is another process, such as a running"
                        f" avila serve, holding it?): {exc}"
                    ) from exc
                time.sleep(0.1)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise StorageUnavailable("store is closed")
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._conn.cursor()
            self._local.cursor = cursor
        return cursor

    def _relation(self, sql: str, params: Sequence[Any] | None) -> duckdb.DuckDBPyRelation:
        return self._cursor().sql(sql, params=list(params or []))

    def append_events(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if table.schema != EVENT_SCHEMA:
            table = table.select(list(EVENT_COLUMN_NAMES)).cast(EVENT_SCHEMA)
        with self._write_lock:
            # A relation over the Arrow table appended in place: no view to register and drop,
            # which costs ~0.6 ms per commit (measured) and shows in single-event latency.
            self._cursor().from_arrow(table).insert_into("events")

    def append_table(self, table_name: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        with self._write_lock:
            cursor = self._cursor()
            known = {
                row[0]: None
                for row in cursor.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
                    " AND table_schema = 'main'",
                    [table_name],
                ).fetchall()
            }
            if table_name == "events" or not known:
                raise ValueError(f"no appendable table named {table_name!r}")
            unknown = [name for name in table.column_names if name not in known]
            if unknown:
                raise ValueError(f"table {table_name!r} has no columns {unknown}")
            # Names below come from the catalog (checked above), never from the caller alone.
            columns = ", ".join(f'"{name}"' for name in table.column_names)
            cursor.register("_incoming_rows", table)
            try:
                cursor.execute(
                    f"INSERT INTO {table_name} ({columns}) SELECT {columns} FROM _incoming_rows"
                )
            finally:
                cursor.unregister("_incoming_rows")

    def recent_event_keys(self, since: datetime) -> Iterator[tuple[str, str]]:
        reader = self._relation(
            "SELECT project_id, event_id FROM events WHERE received_at >= ?", [since]
        ).to_arrow_reader(100_000)
        for batch in reader:
            yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self._cursor().execute(sql, list(params or [])).fetchall()

    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        return self._relation(sql, params).to_arrow_table()

    def query_batches(
        self, sql: str, params: Sequence[Any] | None = None, batch_rows: int = 65536
    ) -> Iterator[pa.RecordBatch]:
        reader = self._relation(sql, params).to_arrow_reader(batch_rows)
        yield from reader

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        with self._write_lock:
            rows = self._cursor().execute(sql, list(params or [])).fetchall()
        return int(rows[0][0]) if rows and rows[0] and isinstance(rows[0][0], int) else 0

    def ping(self) -> None:
        try:
            self._cursor().execute("SELECT 1").fetchall()
        except duckdb.Error as exc:
            raise StorageUnavailable(f"DuckDB is not answering: {exc}") from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()
