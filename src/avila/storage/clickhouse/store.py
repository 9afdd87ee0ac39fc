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
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from avila.errors import ConfigError, QueryTimeout, StorageUnavailable
from avila.storage.clickhouse import migrations
from avila.storage.clickhouse.log_rounds import ClickHouseLogRounds
from avila.storage.clickhouse.params import prepare
from avila.storage.clickhouse.target import ClickHouseOptions, ClickHouseTarget
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


log = logging.getLogger("avila.storage")

#: Settings of every session: the stored timestamps are naive UTC; FINAL on every table that
#: has one (ReplacingMergeTree) so a read sees one row per key.
SESSION_SETTINGS: dict[str, Any] = {"session_timezone": "UTC", "final": 1}

#: ClickHouse's error code for a query past ``max_execution_time``.
TIMEOUT_EXCEEDED = 159


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


class ClickHouseStore(ClickHouseLogRounds):
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
