"""DuckDB file store.

One connection per process (DuckDB allows one writing process per file); writes are serialised
by a lock and each is one transaction, which DuckDB fsyncs on commit. Reads use a cursor per
thread so heavy queries run off the event loop in parallel with ingestion.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa

from avila.errors import StorageUnavailable
from avila.storage import (
    event_order,
    person_map,
    purchase_table,
    rollups,
    session_table,
    user_history,
)
from avila.storage.base import Compacted, Statement
from avila.storage.duckdb.migrations import migrate
from avila.storage.duckdb.rows import DuckDBRows
from avila.storage.duckdb.watchdog import Watchdog
from avila.storage.ingest_log import IngestLogConfig, default_log_dir
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA

if TYPE_CHECKING:
    pass

CHECKPOINT_THRESHOLD = "256MB"
T = TypeVar("T")


def insert_events(
    cursor: duckdb.DuckDBPyConnection,
    table: pa.Table,
    touches: list[pa.Table],
    partials: rollups.Partials | None = None,
) -> None:
    """Append events and their rollups (avila.storage.rollups) in the caller's transaction,
    and add to ``touches`` what their kept sessions need (avila.storage.session_table: the
    caller hands the transaction's touches to its :class:`~session_table.Upkeep` before the
    commit). ``partials``: :func:`rollups.partials` of ``table`` if the caller computed it
    already."""
    cursor.from_arrow(table).insert_into("events")
    purchase_table.add_rows(cursor, table)
    session_table.add_keyed(cursor, table)
    touch = session_table.touched(table)
    if touch is not None:
        touches.append(touch)
    found = partials or rollups.partials(table)
    if found is not None:
        rollups.add_partials(cursor, found)
        return
    cursor.register("_rollup_rows", table)  # revenue the Arrow path cannot take exactly
    try:
        rollups.add_events(cursor, "_rollup_rows")
    finally:
        cursor.unregister("_rollup_rows")


def resolve_memory_limit(value: str) -> str:
    """DuckDB's ``memory_limit`` from a setting: ``4GB`` as is, ``50%`` of physical RAM."""
    if not value.endswith("%"):
        return value
    import os

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(64, int(total * float(value[:-1]) / 100) >> 20)}MB"


class DuckDBStore(DuckDBRows):
    backend = "duckdb"

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        threads: int | None = None,
        lock_wait: float = 15.0,
        memory_limit: str = "",
        query_timeout: float = 0,
    ) -> None:
        self.path = Path(path)
        #: Reads (query, query_arrow) are cancelled past this many seconds (0: never).
        self.watchdog = Watchdog(query_timeout)
        self.query_timeout = query_timeout
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
            config["memory_limit"] = resolve_memory_limit(memory_limit)
        self._conn = self._connect(read_only, config, lock_wait)
        #: When the kept sessions of written events are cut (None: a read-only store).
        self._sessions: session_table.Upkeep | None = None
        if not read_only:
            migrate(self._conn)
            ((pending,),) = self._conn.execute("SELECT count(*) FROM kept_pending").fetchall()
            self._sessions = session_table.Upkeep(int(pending))
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._memory_log_dir: Path | None = None
        # the log position the last commit_log_batch committed (None: unknown)
        self._committed_log_position: int | None = None

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
            cursor = self._cursor()
            cursor.execute("BEGIN TRANSACTION")
            try:
                touches: list[pa.Table] = []
                insert_events(cursor, table, touches)
                settled = self._upkeep().write(cursor, touches)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            if settled:
                self._upkeep().settled()

    def _upkeep(self) -> session_table.Upkeep:
        if self._sessions is None:
            raise StorageUnavailable("the store was opened read-only")
        return self._sessions

    def settle_kept_sessions(self) -> None:
        if self._sessions is None or not self._sessions.pending:
            return
        with self.bulk_transaction() as cursor:
            session_table.settle(cursor, [])
        self._sessions.settled()

    def _read_apart(self, look: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """``look`` (which only reads) on a cursor of its own, without the write lock."""
        reader = self._conn.cursor()
        try:
            return look(reader)
        finally:
            reader.close()

    def compact_rollups(self, max_days: int = 8) -> Compacted:
        if self._sessions is None:  # a read-only store
            return Compacted()
        # only reads (a day's first sight scans it for its keys): no write lock held meanwhile
        due = self._read_apart(rollups.due_compactions)
        if due.baselines:
            with self.bulk_transaction() as cursor:
                rollups.record_baselines(cursor, due.baselines)
        # a day per transaction: a loader round waits for one day's rewrite at most
        for table, day in due.pairs[:max_days]:
            with self.bulk_transaction() as cursor:
                rollups.compact(cursor, table, day)
        return Compacted(
            days=min(len(due.pairs), max_days),
            more_left=bool(due.baselines) or len(due.pairs) > max_days,
        )

    def order_event_days(self, max_days: int = 1) -> Compacted:
        if self._sessions is None:  # a read-only store
            return Compacted()
        due = self._read_apart(event_order.due_days)
        # a day per transaction: a loader round waits for one day's rewrite at most
        for day in due[:max_days]:
            with self.bulk_transaction() as cursor:
                event_order.order_day(cursor, day)
        return Compacted(days=min(len(due), max_days), more_left=len(due) > max_days)

    def fold_user_history(self, max_folds: int = 1) -> Compacted:
        if self._sessions is None:  # a read-only store
            return Compacted()
        finished = rollups.finished_before()
        done = 0
        for _ in range(max_folds):
            due = self._read_apart(lambda cursor: user_history.due_fold(cursor, finished))
            if due is None:
                return Compacted(days=done)
            # a fold per transaction: a loader round waits for one at most
            with self.bulk_transaction() as cursor:
                done += user_history.fold(cursor, due)
        more = self._read_apart(lambda cursor: user_history.due_fold(cursor, finished))
        return Compacted(days=done, more_left=more is not None)

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
            if table_name == "identities":  # with the person map, in one transaction
                return person_map.append_links(cursor, table)
            # Names below come from the catalog (checked above), never from the caller alone.
            columns = ", ".join(f'"{name}"' for name in table.column_names)
            cursor.register("_incoming_rows", table)
            try:
                cursor.execute(
                    f"INSERT INTO {table_name} ({columns}) SELECT {columns} FROM _incoming_rows"
                )
            finally:
                cursor.unregister("_incoming_rows")

    @contextmanager
    def bulk_transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction (``avila import``, :meth:`execute_all`): committed when the block
        ends, rolled back if it raises. Holds the write lock throughout."""
        with self._write_lock:
            cursor = self._cursor()
            cursor.execute("BEGIN TRANSACTION")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    # -- the ingest log's loader ---------------------------------------------------------------

    def log_position(self) -> int:
        """The log position up to which the ingest log is loaded (see avila.storage.loader)."""
        rows = self._cursor().execute("SELECT max(position) FROM ingest_position").fetchall()
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def commit_log_batch(
        self,
        position: int,
        *,
        events: pa.Table | None = None,
        devices: pa.Table | None = None,
        tables: Sequence[tuple[str, pa.Table]] = (),
    ) -> None:
        """Append rows loaded from the ingest log and record ``position``, in one transaction.

        A round whose end is already recorded was committed before (a retry after a commit
        whose outcome was unclear, or after a failed trim): it is skipped, never stored twice.
        ``tables`` may carry the events' rollup rows (``rollup_daily``, ``rollup_user_days``:
        :func:`rollups.partials` of ``events``, computed by the loader outside the
        transaction); without them they are computed here."""
        transaction = LogRound(self, done_at=position)
        try:
            transaction.add(events, devices, tables)
            transaction.commit(position)
        except BaseException:
            transaction.abort()
            raise

    def open_log_round(self, start: int) -> LogRound:
        """Begin one loader round that continues the log from ``start`` (the recorded
        position): its rows are added piece by piece as the loader reads them
        (:meth:`LogRound.add`), and :meth:`LogRound.commit` records its end position with them
        in the same transaction. Holds the write lock until the commit or
        :meth:`LogRound.abort`. A round that starts below the recorded position was committed
        before: its pieces are skipped."""
        return LogRound(self, done_at=start + 1, start=start)

    def _append_log_rows(
        self,
        cursor: duckdb.DuckDBPyConnection,
        events: pa.Table | None,
        devices: pa.Table | None,
        tables: Sequence[tuple[str, pa.Table]],
        touches: list[pa.Table],
    ) -> None:
        given = dict(tables)
        tables = [(name, table) for name, table in tables if name not in rollups.TABLES]
        if events is not None and events.num_rows:
            partials = None
            if rollups.TABLES[0] in given:
                partials = rollups.Partials(*(given[name] for name in rollups.TABLES))
            insert_events(cursor, events, touches, partials)
        if devices is not None and devices.num_rows:
            # A device first seen in the unloaded log before a restart is claimed again
            # after it: keep the first row per device.
            cursor.register("_log_devices", devices)
            try:
                cursor.execute(
                    "INSERT INTO devices SELECT d.* FROM (SELECT * FROM _log_devices"
                    " QUALIFY row_number() OVER (PARTITION BY project_id, device_id) = 1) d"
                    " WHERE NOT EXISTS (SELECT 1 FROM devices x WHERE x.project_id ="
                    " d.project_id AND x.device_id = d.device_id)"
                )
            finally:
                cursor.unregister("_log_devices")
        for name, table in tables:
            if name not in ("telemetry", "telemetry_messages", "identities"):
                raise ValueError(f"the loader does not write table {name!r}")
            if table.num_rows:
                cursor.from_arrow(table).insert_into(name)
                if name == "identities":  # the person map, in this transaction
                    person_map.links_added(cursor, table)

    def default_ingest_log_config(self) -> IngestLogConfig:
        if str(self.path) == ":memory:":
            import tempfile

            self._memory_log_dir = Path(tempfile.mkdtemp(prefix="avila-ingest-log-"))
            return IngestLogConfig(self._memory_log_dir)
        return IngestLogConfig(default_log_dir(self.path))

    def recent_event_keys(self, since: datetime) -> Iterator[tuple[str, str]]:
        reader = self._relation(
            "SELECT project_id, event_id FROM events WHERE received_at >= ?", [since]
        ).to_arrow_reader(100_000)
        for batch in reader:
            yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        self.read_barrier()
        cursor = self._cursor()
        with self.watchdog.guard(cursor):
            return cursor.execute(sql, list(params or [])).fetchall()

    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        self.read_barrier()
        cursor = self._cursor()
        with self.watchdog.guard(cursor):
            return cursor.sql(sql, params=list(params or [])).to_arrow_table()

    def query_batches(
        self, sql: str, params: Sequence[Any] | None = None, batch_rows: int = 65536
    ) -> Generator[pa.RecordBatch, None, None]:
        self.read_barrier()
        reader = self._relation(sql, params).to_arrow_reader(batch_rows)
        yield from reader

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        with self._write_lock:
            return _changed(self._cursor().execute(sql, list(params or [])).fetchall())

    def execute_all(self, statements: Sequence[Statement]) -> list[int]:
        with self.bulk_transaction() as cursor:
            return [
                _changed(cursor.execute(sql, list(params)).fetchall()) for sql, params in statements
            ]

    def ping(self) -> None:
        try:
            self._cursor().execute("SELECT 1").fetchall()
        except duckdb.Error as exc:
            raise StorageUnavailable(f"DuckDB is not answering: {exc}") from exc

    def close(self) -> None:
        if not self._closed:
            self._close_ingest_log()
            self._closed = True
            self._conn.close()
            if self._memory_log_dir is not None:
                import shutil

                shutil.rmtree(self._memory_log_dir, ignore_errors=True)


class LogRound:
    """One loader round's transaction (:meth:`DuckDBStore.open_log_round`)."""

    def __init__(self, store: DuckDBStore, *, done_at: int, start: int | None = None) -> None:
        """Begin; the round is skipped if the recorded position is at least ``done_at``, and
        refused if it is below ``start`` (the round's first position, when known)."""
        self._store = store
        store._write_lock.acquire()
        self._open = True
        self._skip: int | None = None  # the recorded position, when the round is in already
        self._touches: list[pa.Table] = []  # (the store's session Upkeep at commit)
        try:
            self._cursor = store._cursor()
            known = store._committed_log_position
            store._committed_log_position = None  # unknown until this COMMIT returns
            self._cursor.execute("BEGIN TRANSACTION")
            # The check costs a statement per round (rounds are small at low load); it is only
            # needed when the previous commit's outcome is unknown (it raised, or this is the
            # first since start). This process is the file's only writer.
            if known is None or known >= done_at:
                recorded = self._cursor.execute(
                    "SELECT position FROM ingest_position WHERE log = 'main'"
                ).fetchall()
                known = int(recorded[0][0]) if recorded else 0
                if known >= done_at:
                    self._skip = known
            if start is not None and known < start:
                # A round always continues from the recorded position; one that starts beyond
                # it would record its end and so skip the log between, unloaded.
                raise ValueError(
                    f"a loader round from {start} would leave the log from {known} unloaded"
                )
        except BaseException:
            self.abort()
            raise

    def add(
        self,
        events: pa.Table | None = None,
        devices: pa.Table | None = None,
        tables: Sequence[tuple[str, pa.Table]] = (),
    ) -> None:
        """Append one piece of the round's rows (see :meth:`DuckDBStore.commit_log_batch`)."""
        if self._skip is None:
            self._store._append_log_rows(self._cursor, events, devices, tables, self._touches)

    def commit(self, position: int) -> None:
        """Record ``position`` and commit everything added (on failure, call :meth:`abort`)."""
        store = self._store
        if self._skip is not None:
            self.abort()
            store._committed_log_position = self._skip
            return
        # the round's sessions, once for all its pieces
        settled = store._upkeep().write(self._cursor, self._touches)
        self._cursor.execute(
            "UPDATE ingest_position SET position = ?, loaded_at = now()::TIMESTAMP"
            " WHERE log = 'main'",
            [position],
        )
        self._cursor.execute("COMMIT")
        store._committed_log_position = position
        if settled:
            store._upkeep().settled()
        self._open = False
        store._write_lock.release()

    def abort(self) -> None:
        """Roll back whatever was added (idempotent; no error of its own escapes)."""
        if not self._open:
            return
        self._open = False
        try:
            if hasattr(self, "_cursor"):
                self._cursor.execute("ROLLBACK")
        except Exception:  # noqa: S110 - no transaction open, or the connection is gone
            pass
        finally:
            self._store._write_lock.release()


def _changed(rows: list[tuple[Any, ...]]) -> int:
    """The row count DuckDB answers a write with (0 for a statement that has none)."""
    return int(rows[0][0]) if rows and rows[0] and isinstance(rows[0][0], int) else 0
