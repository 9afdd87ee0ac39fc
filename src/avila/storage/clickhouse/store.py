"""ClickHouse store: a server or cluster (``clickhouse[s]://``) or the embedded engine
(``chdb:///dir``), through clickhouse-connect.

**Process.** The server opens chdb in its own process, not in a child store process like
DuckDB (:mod:`avila.storage.duckdb.process`). That child exists because DuckDB's binding takes
the GIL again and again during an Arrow insert; chdb runs a query in its engine's own threads
with the GIL released (clickhouse-connect hands it whole Arrow buffers), so the event loop keeps
running, and a second process would only add a copy of every result through a pipe. chdb admits
one process per data directory, exactly like the DuckDB file: CLI tools (export, import, train,
migrate-store) open it only while no server holds it.

**Reads** use one client per thread (clickhouse-connect's chdb backend serialises the queries
of one client); the ``final`` setting is on for every query, so the ReplacingMergeTree tables
(devices, twins, rules, experiments, ...) read as their newest row per key, and timestamps are
naive UTC (``session_timezone`` UTC; Arrow results have the zone removed), as on DuckDB.

**Writes.** No transactions: the ingest log's loader writes each round's tables as blocks
tagged with ``insert_deduplication_token`` (log id and position range), records the round's end
as *pending* first and the new position after, so a round retried after a crash carries the
same tokens and nothing is stored twice (:meth:`commit_log_batch`). Keyed small-table writes
(:meth:`insert_new`, :meth:`upsert`, :meth:`update_rows`, :meth:`update_many`) insert whole new
rows into ReplacingMergeTree tables and count first under the store's write lock; deletes are
lightweight ``DELETE``. The write lock makes compare-and-set and insert-if-absent exact within
one process; across replicas of a cluster they are last-writer-wins (docs/scale-out.md).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from avila.errors import ConfigError, QueryTimeout, StorageUnavailable
from avila.storage.clickhouse import migrations
from avila.storage.clickhouse.params import prepare
from avila.storage.clickhouse.rows import ClickHouseRows
from avila.storage.clickhouse.target import ClickHouseOptions, ClickHouseTarget
from avila.storage.ingest_log import IngestLogConfig, default_log_dir
from avila.storage.load_rounds import NothingStored
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


log = logging.getLogger("avila.storage")

#: Settings of every session: the stored timestamps are naive UTC; FINAL on every table that
#: has one (ReplacingMergeTree) so a read sees one row per key.
SESSION_SETTINGS: dict[str, Any] = {"session_timezone": "UTC", "final": 1}

#: File in the ingest log's directory naming the log in ``ingest_position`` (a replica's log
#: keeps its id across restarts and host names; two logs never share a position).
LOG_ID_FILE = "clickhouse-log-id"
#: ClickHouse's error code for a query past ``max_execution_time``.
TIMEOUT_EXCEEDED = 159

#: Tables the loader writes (the DuckDB loader's list).
LOADER_TABLES = ("telemetry", "telemetry_messages", "identities")

#: ClickHouse's default ``max_insert_block_size`` (rows).
DEFAULT_MAX_INSERT_BLOCK = 1_048_449
#: ClickHouse errors an insert raises while it converts and checks its block's values, before
#: it writes any part of it: a value the table refuses, whatever the store's state
#: (VIOLATED_CONSTRAINT, CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE,
#: TYPE_MISMATCH, CANNOT_CONVERT_TYPE, CANNOT_PARSE_TEXT, CANNOT_PARSE_INPUT_ASSERTION_FAILED,
#: CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME, CANNOT_PARSE_NUMBER, INCORRECT_DATA,
#: DECIMAL_OVERFLOW). Anything else (the disk, memory, too many parts, a lost connection, whose
#: insert may even have landed) may follow a written part: never taken as "nothing stored".
REFUSED_BEFORE_WRITE = frozenset({469, 349, 321, 53, 70, 6, 27, 38, 41, 72, 117, 407})


def _naive(value: Any) -> Any:
    """A datetime with a zone as naive UTC. Stored columns are DateTime64(6, 'UTC') and come back
    naive already; an expression without a zone comes back in the zone clickhouse-connect thinks
    the server has (chdb: the host's), so it is converted."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _naive_utc(table: pa.Table) -> pa.Table:
    """Timestamps with a zone (ClickHouse's Arrow output names the session's) as naive UTC."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = pa.timestamp(field.type.unit)
            table = table.set_column(i, pa.field(field.name, naive), table.column(i).cast(naive))
    return table


def _naive_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    if not any(pa.types.is_timestamp(f.type) and f.type.tz for f in batch.schema):
        return batch
    return _naive_utc(pa.Table.from_batches([batch])).combine_chunks().to_batches()[0]


class ClickHouseStore(ClickHouseRows):
    backend = "clickhouse"
    #: At most 5 loader rounds a second (each is a few inserts, i.e. parts): under load rounds
    #: are large anyway; when idle an event is readable at most this much later.
    min_load_round_s = 0.2

    def __init__(
        self,
        target: ClickHouseTarget,
        options: ClickHouseOptions | None = None,
        *,
        migrate: bool = True,
        query_timeout: float = 0,
    ) -> None:
        self.target = target
        self.query_timeout = query_timeout
        self.options = options or ClickHouseOptions()
        self.path = target.embedded_path
        self._local = threading.local()
        self._clients: list[Client] = []
        self._clients_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        self._log_id = "main"
        self._catalog: dict[str, frozenset[str]] = {}
        if not target.is_embedded and target.database != "default":
            self._create_database()
        try:
            self._client()
        except Exception as exc:
            raise StorageUnavailable(
                f"cannot open ClickHouse store {target.describe()} (is another process, such as a"
                f" running avila serve, holding it?): {exc}"
            ) from exc
        if migrate:
            migrations.migrate(
                self.execute,
                self._query_rows,
                migrations.DDLOptions(self.options.cluster, self.options.ttl_days),
            )

    # -- connections ---------------------------------------------------------------------------

    def _session_settings(self) -> dict[str, Any]:
        settings = dict(SESSION_SETTINGS)
        if self.options.cluster:
            # events_resolved joins the Distributed events with the Distributed identities: a
            # GLOBAL join sends the (small) identity side to every shard once.
            settings["distributed_product_mode"] = "global"
        return settings

    def _connect(self, database: str | None = None) -> Client:
        import clickhouse_connect

        if self.target.embedded_path is not None:
            if importlib.util.find_spec("chdb") is None:
                raise ConfigError(
                    "AVILA_STORAGE_URL names the embedded ClickHouse engine (chdb:///), which is"
                    " not installed: pip install 'avila-analytics[chdb]'"
                )
            self.target.embedded_path.mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(
                interface="chdb",
                path=str(self.target.embedded_path),
                settings=self._session_settings(),
            )
        return clickhouse_connect.get_client(
            host=self.target.host,
            port=self.target.port,
            username=self.target.username,
            password=self.target.password,
            database=database or self.target.database,
            secure=self.target.secure,
            settings=self._session_settings(),
            # Several threads share nothing but the pool: no server session to lock.
            autogenerate_session_id=False,
        )

    def _create_database(self) -> None:
        client = self._connect("default")
        try:
            on = f" ON CLUSTER {self.options.cluster}" if self.options.cluster else ""
            # The name was checked by parse_url (letters, digits, _).
            client.command(f"CREATE DATABASE IF NOT EXISTS `{self.target.database}`{on}")
        finally:
            client.close()

    def _client(self) -> Client:
        if self._closed:
            raise StorageUnavailable("store is closed")
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._connect()
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    # -- reads ---------------------------------------------------------------------------------

    def _query_rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        query, values = prepare(sql, params)
        rows = self._client().query(query, parameters=values).result_rows
        return [tuple(_naive(v) for v in row) for row in rows]

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        self.read_barrier()
        query, values = prepare(sql, params)
        with self._bounded() as settings:
            rows = self._client().query(query, parameters=values, settings=settings).result_rows
        return [tuple(_naive(v) for v in row) for row in rows]

    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        self.read_barrier()
        query, values = prepare(sql, params)
        with self._bounded() as settings:
            table = self._client().query_arrow(
                query, parameters=values, use_strings=True, settings=settings
            )
        return _naive_utc(table)

    @contextmanager
    def _bounded(self) -> Iterator[dict[str, Any]]:
        """Settings that make the server cancel a read past ``AVILA_QUERY_TIMEOUT``, and its
        TIMEOUT_EXCEEDED error as :class:`QueryTimeout` (504), as DuckDB's watchdog does."""
        if not self.query_timeout:
            yield {}
            return
        from clickhouse_connect.driver.exceptions import DatabaseError

        try:
            yield {"max_execution_time": self.query_timeout, "timeout_overflow_mode": "throw"}
        except DatabaseError as exc:
            if getattr(exc, "code", None) == TIMEOUT_EXCEEDED or "TIMEOUT_EXCEEDED" in str(exc):
                raise QueryTimeout.after(self.query_timeout) from None
            raise

    def query_batches(
        self, sql: str, params: Sequence[Any] | None = None, batch_rows: int = 65536
    ) -> Generator[pa.RecordBatch, None, None]:
        self.read_barrier()
        query, values = prepare(sql, params)
        stream = self._client().query_arrow_stream(
            query,
            parameters=values,
            settings={"max_block_size": batch_rows},
            use_strings=True,
        )
        with stream:
            for item in stream:
                batches = item.to_batches() if isinstance(item, pa.Table) else [item]
                for batch in batches:
                    yield _naive_batch(batch)

    def recent_event_keys(self, since: datetime) -> Iterator[tuple[str, str]]:
        query, values = prepare(
            "SELECT project_id, event_id FROM events WHERE received_at >= ?", [since]
        )
        with self._client().query_arrow_stream(query, parameters=values, use_strings=True) as st:
            for item in st:
                for batch in item.to_batches() if isinstance(item, pa.Table) else [item]:
                    yield from zip(
                        batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
                    )

    def ping(self) -> None:
        try:
            self._client().query("SELECT 1")
        except Exception as exc:
            raise StorageUnavailable(f"ClickHouse is not answering: {exc}") from exc

    # -- writes --------------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Run one statement. ClickHouse reports no affected rows for INSERT ... SELECT, DELETE
        or UPDATE: 0 here; callers that need a count use the keyed-row methods."""
        query, values = prepare(sql, params)
        with self._write_lock:
            self._client().command(query, parameters=values)
        return 0

    def _insert_settings(self, token: str | None = None) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        if token:
            settings["insert_deduplication_token"] = token
        if self.options.insert_quorum:
            settings["insert_quorum"] = self.options.insert_quorum
        if self.options.cluster:
            # Acknowledge only once the shards hold the block (not a local spool).
            settings["distributed_foreground_insert"] = 1
        return settings

    def _insert_arrow(self, table_name: str, table: pa.Table, token: str | None = None) -> None:
        self._client().insert_arrow(table_name, table, settings=self._insert_settings(token))

    def append_events(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if table.schema != EVENT_SCHEMA:
            table = table.select(list(EVENT_COLUMN_NAMES)).cast(EVENT_SCHEMA)
        with self._write_lock:
            self._insert_arrow("events", table)

    def append_table(self, table_name: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if table_name == "events":
            raise ValueError(f"no appendable table named {table_name!r}")
        self._check_columns(table_name, table.column_names)
        with self._write_lock:
            self._insert_arrow(table_name, table)

    # -- the ingest log's loader -----------------------------------------------------------------

    def _position_row(self) -> tuple[int, int]:
        rows = self._query_rows(
            "SELECT position, pending FROM ingest_position WHERE log = ?", [self._log_id]
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def _record_position(self, position: int, pending: int) -> None:
        self._insert_rows(
            "ingest_position",
            ("log", "position", "pending", "loaded_at"),
            [[self._log_id, position, pending, datetime.now(UTC).replace(tzinfo=None)]],
        )

    def log_position(self) -> int:
        return self._position_row()[0]

    def pending_log_round(self) -> int:
        position, pending = self._position_row()
        return pending if pending > position else 0

    def commit_log_batch(
        self,
        position: int,
        *,
        events: pa.Table | None = None,
        devices: pa.Table | None = None,
        tables: Sequence[tuple[str, pa.Table]] = (),
    ) -> None:
        """Store one loader round ending at log ``position``, exactly once.

        1. the round's end is recorded as pending (a restart replays exactly this round);
        2. each table's rows go in as one insert, one block (:meth:`_insert_round_block`), whose
           deduplication token names the log, the round and the table: a retry of a block that
           landed is dropped by ClickHouse;
        3. the new position is recorded (a round at or below it is skipped from then on).

        A round without rows (an entry set aside) records its position alone: nothing of it
        can be stored in part. A failure that provably stored nothing of the round raises
        :class:`~avila.storage.load_rounds.NothingStored` after taking back the pending mark
        this call wrote (see :meth:`_stored_nothing`); the loader may then split the round
        (:meth:`avila.storage.loader.Loader._may_split`). Any other failure leaves the round
        pending: it may be partly stored, and only the same round, whole, may follow it.
        """
        for name, _ in tables:
            if name not in LOADER_TABLES:
                raise ValueError(f"the loader does not write table {name!r}")
        with self._write_lock:
            start, pending = self._position_row()
            if start >= position:
                return
            blocks = [t for t in (events, devices, *(t for _, t in tables)) if t is not None]
            if not any(t.num_rows for t in blocks):
                self._record_position(position, 0)
                return
            if pending != position:
                self._record_position(start, position)
            token = f"avila-log:{self._log_id}:{start}-{position}"
            inserted = False  # an insert of this call went in: the round may be partly stored
            inserting: str | None = None  # the table of the insert under way
            try:
                if events is not None and events.num_rows:
                    if events.schema != EVENT_SCHEMA:
                        events = events.select(list(EVENT_COLUMN_NAMES)).cast(EVENT_SCHEMA)
                    inserting = "events"
                    self._insert_round_block("events", events, f"{token}:events")
                    inserted, inserting = True, None
                if devices is not None and devices.num_rows:
                    new = self._new_devices(devices)
                    if new.num_rows:
                        inserting = "devices"
                        self._insert_round_block("devices", new, f"{token}:devices")
                        inserted, inserting = True, None
                for name, table in tables:
                    if table.num_rows:
                        inserting = name
                        self._insert_round_block(name, table, f"{token}:{name}")
                        inserted, inserting = True, None
                self._record_position(position, 0)
            except Exception as exc:
                # pending <= start: no round was pending before this call (an earlier try that
                # may have stored part of this round would have left it pending)
                if inserted or pending > start or not self._stored_nothing(exc, inserting):
                    raise
                try:
                    self._record_position(start, pending)  # the mark this call wrote, taken back
                except Exception:
                    raise exc from None  # the round stays pending: retried whole
                raise NothingStored(f"nothing of the round was stored: {exc}") from exc

    def _insert_round_block(self, table_name: str, table: pa.Table, token: str) -> None:
        """One insert of a loader round: one block, written synchronously. A round's table is
        never cut into several blocks (``min_insert_block_size_rows`` is its row count, the byte
        limit off, ``max_insert_block_size`` at least its rows), so an insert refused while its
        block is checked stored nothing of it (:meth:`_stored_nothing`); several blocks would
        go in one after the other, and a refused later block would leave the earlier ones
        stored. Rounds are far below ClickHouse's default block limits (about a million rows,
        256 MiB) anyway: the same single block, the same deduplication tokens as before."""
        rows = max(table.num_rows, 1)
        settings = self._insert_settings(token)
        settings.update(
            {
                "min_insert_block_size_rows": rows,
                "min_insert_block_size_bytes": 0,
                "max_insert_block_size": max(rows, DEFAULT_MAX_INSERT_BLOCK),
                "async_insert": 0,
            }
        )
        self._client().insert_arrow(table_name, table, settings=settings)

    def _stored_nothing(self, error: Exception, inserting: str | None) -> bool:
        """Whether a round's failure (``error``) before any of its inserts went in stored
        nothing: raised outside an insert (``inserting`` None: decoding the round, looking up
        its devices), or an insert of one block (:meth:`_insert_round_block`) that ClickHouse
        refused while converting and checking its values (:data:`REFUSED_BEFORE_WRITE`), which
        it does before it writes any part. Never on a cluster or with ``insert_quorum``
        (shards or replicas may take a block while another refuses it), nor into a table with
        dependent views (a view's own insert can fail after the table's part is written), nor
        when the session caps a block's bytes (``max_insert_block_size_bytes``, newer
        servers): the insert may then have been several blocks."""
        if inserting is None:
            return True
        if self.options.cluster or self.options.insert_quorum:
            return False
        if getattr(error, "code", None) not in REFUSED_BEFORE_WRITE:
            return False
        try:
            rows = self._query_rows(
                "SELECT (SELECT count() FROM system.tables WHERE database = currentDatabase()"
                " AND name = ? AND notEmpty(dependencies_table)),"
                " (SELECT count() FROM system.settings"
                " WHERE name = 'max_insert_block_size_bytes' AND value != '0')",
                [inserting],
            )
        except Exception as exc:  # (the store in trouble: not provably nothing)
            log.warning("could not check a refused insert", extra={"error": str(exc)})
            return False
        return rows == [(0, 0)]

    def _new_devices(self, devices: pa.Table) -> pa.Table:
        """The first row per device of ``devices`` not stored yet (a device first seen in the
        unloaded log before a restart is claimed again after it)."""
        keys = list(
            zip(
                devices.column("project_id").to_pylist(),
                devices.column("device_id").to_pylist(),
                strict=True,
            )
        )
        stored = set()
        if keys:
            stored = {
                (r[0], r[1])
                for r in self._query_rows(
                    "SELECT project_id, device_id FROM devices WHERE device_id IN ?",
                    [sorted({k[1] for k in keys})],
                )
            }
        keep: list[int] = []
        seen: set[tuple[str, str]] = set()
        for i, k in enumerate(keys):
            if k not in stored and k not in seen:
                seen.add(k)
                keep.append(i)
        return devices.take(pa.array(keep, pa.int64())) if len(keep) < len(keys) else devices

    def _log_id_for(self, directory: Path) -> str:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOG_ID_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            ident = uuid.uuid4().hex
            tmp = path.with_suffix(".tmp")
            tmp.write_text(ident)
            tmp.replace(path)
            return ident

    def default_ingest_log_config(self) -> IngestLogConfig:
        if self.target.embedded_path is None:
            raise StorageUnavailable(
                "a ClickHouse server store needs the ingest log's directory"
                " (AVILA_INGEST_LOG_DIR or the data dir)"
            )
        return IngestLogConfig(default_log_dir(self.target.embedded_path))

    def _attach_loader(self, config: IngestLogConfig) -> int:
        self._log_id = self._log_id_for(config.directory)
        return super()._attach_loader(config)

    def close(self) -> None:
        if self._closed:
            return
        self._close_ingest_log()
        self._closed = True
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # closing must not hide the caller's own error
                log.warning("closing a ClickHouse client failed", extra={"error": str(exc)})
