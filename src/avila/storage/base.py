"""The storage interface. Analytics, ingestion and exports talk to this, never to a driver.

A backend owns one database. Writes come from exactly one writer (the ingest group commit);
reads may come from any thread. Backend differences are data (SQL tables per dialect), not
branches in callers.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from avila.storage.ingest_log import IngestLog, IngestLogConfig, Recovery
from avila.storage.load_progress import LoadProgress
from avila.storage.schema import ColumnBatch, columns_to_arrow

if TYPE_CHECKING:
    from avila.storage.loader import Loader

#: One SQL statement and its parameters (:meth:`Store.execute_all`).
Statement = tuple[str, Sequence[Any]]


class Compacted(NamedTuple):
    """What one :meth:`Store.compact_rollups` (or :meth:`Store.order_event_days`,
    :meth:`Store.fold_user_history`) call did."""

    #: (table, day) pairs compacted (days ordered, folds done)
    days: int = 0
    #: whether it left days to look at or compact (days seen for the first time, or more due
    #: than it took): an idle caller may look again at once
    more_left: bool = False


#: How long a read waits for the loader to catch up with what was acknowledged before it.
READ_BARRIER_S = 5.0
#: How long closing a store waits for the loader to drain the log (the rest stays in the log).
DRAIN_TIMEOUT_S = 120.0


def check_columns(
    catalog: dict[str, frozenset[str]],
    table: str,
    names: Sequence[str],
    read_catalog: Callable[[str], Iterable[Sequence[Any]]],
) -> None:
    """ValueError unless ``table`` exists with every column in ``names``, so they may be quoted
    into a statement. ``read_catalog(table)`` gives the table's column names (one per row) from
    the backend's catalog; ``catalog`` caches them per table."""
    known = catalog.get(table)
    if known is None:
        known = frozenset(row[0] for row in read_catalog(table))
        if not known:
            raise ValueError(f"no table named {table!r}")
        catalog[table] = known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"table {table!r} has no columns {unknown}")


def where_clause(where: Mapping[str, Any], params: list[Any]) -> str:
    """SQL for the keyed row methods' ``where`` (column = value; a list or tuple means IN; the
    entries AND-ed), appending the values to ``params``. Column names come from code, quoted
    the ANSI way, which DuckDB and ClickHouse both read."""
    terms = []
    for name, value in where.items():
        if isinstance(value, list | tuple):
            if not value:
                terms.append("FALSE")
                continue
            terms.append(f'"{name}" IN ({", ".join("?" for _ in value)})')
            params.extend(value)
        else:
            terms.append(f'"{name}" = ?')
            params.append(value)
    return " AND ".join(terms) or "TRUE"


class Store(ABC):
    """A place events are durably stored and queried."""

    #: Short backend name, used to pick SQL dialect tables (``"duckdb"``).
    backend: str
    #: Where the ingest log lives and its limits; None: the backend's default place.
    ingest_log_config: IngestLogConfig | None = None
    _ingest_log: IngestLog | None = None
    ingest_recovery: Recovery | None = None
    _load_progress: LoadProgress | None = None
    _loader: Loader | None = None
    _log_lock = threading.Lock()
    #: Shortest time between the starts of two loader rounds, in seconds (0: a round starts as
    #: soon as something is durable). ClickHouse writes every insert as a new part; at low load
    #: one round per request would make many tiny parts, so its rounds gather for a moment.
    min_load_round_s: float = 0.0
    #: Reads are cancelled past this many seconds (0: never). A report made of several reads
    #: (a long range read in slices) also checks it between them, for the whole request.
    query_timeout: float = 0.0
    #: ``(address, key)`` of a listener through which another process can open read channels
    #: of its own (:class:`avila.storage.duckdb.channels.RemoteReader`); None: reads only from
    #: this process.
    read_address: tuple[str, bytes] | None = None

    # -- the ingest log (avila.storage.ingest_log): writes are acknowledged on it -----------

    @property
    def load_progress(self) -> LoadProgress:
        if self._load_progress is None:
            self._load_progress = LoadProgress()
        return self._load_progress

    @property
    def ingest_log(self) -> IngestLog | None:
        return self._ingest_log

    def open_ingest_log(self) -> IngestLog:
        """The store's ingest log, opened (recovered, loader started) on first use. Blocking:
        recovery scans the unloaded part of the log."""
        with self._log_lock:
            if self._ingest_log is not None:
                return self._ingest_log
            config = self.ingest_log_config or self.default_ingest_log_config()
            progress = self.load_progress
            loaded = self._attach_loader(config)
            ingest_log = IngestLog(config, progress, self._notify_durable)
            self.ingest_recovery = ingest_log.recover(loaded)
            progress.set_loaded(loaded)
            ingest_log.start()
            self._notify_durable(self.ingest_recovery.end)
            self._ingest_log = ingest_log
            return ingest_log

    def default_ingest_log_config(self) -> IngestLogConfig:
        raise NotImplementedError(f"{self.backend} has no default ingest log place")

    def _attach_loader(self, config: IngestLogConfig) -> int:
        """Start this backend's loader for the log in ``config.directory`` (paused until the first durable
        position); returns the loaded log position recorded in the store. By default the loader
        is a thread in this process (the DuckDB store process overrides it)."""
        from avila.storage.loader import Loader

        self._loader = Loader(
            self, config.directory, self.load_progress.set_loaded, max_rows=config.max_load_rows
        )
        self._loader.start()
        self.load_progress.on_wait(self._loader.flush)
        return self._loader.position

    def _notify_durable(self, position: int) -> None:
        if self._loader is not None:
            self._loader.notify(position)

    def _stop_loader(self) -> None:
        if self._loader is not None:
            self._loader.stop()
            self._loader = None

    def _close_ingest_log(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Stop appending, let the loader drain the log, stop it."""
        ingest_log = self._ingest_log
        if ingest_log is None:
            return
        ingest_log.close()
        progress = self.load_progress
        if not progress.wait_loaded(progress.durable, timeout):
            import logging

            logging.getLogger("avila.storage").warning(
                "ingest log not fully loaded at close; the rest loads at the next start",
                extra=ingest_log.backlog(),
            )
        self._stop_loader()

    def read_barrier(self) -> None:
        if self._ingest_log is not None:
            self.load_progress.barrier(READ_BARRIER_S)

    @abstractmethod
    def append_events(self, table: pa.Table) -> None:
        """Append rows (schema :data:`avila.storage.schema.EVENT_SCHEMA`) in one durable
        transaction: when this returns, the rows survive a crash."""

    def append_table(self, table_name: str, table: pa.Table) -> None:
        """Append rows to another table of the schema (telemetry, identities ...) in one durable
        transaction. ``table_name`` must be an existing table created by a migration (checked
        against the catalog, never taken as SQL); Arrow columns are matched to columns by name."""
        raise NotImplementedError

    async def append_table_async(self, table_name: str, table: pa.Table) -> None:
        await asyncio.to_thread(self.append_table, table_name, table)

    async def append_events_async(self, table: pa.Table) -> None:
        """:meth:`append_events` for the event loop; backends may override to avoid a thread."""
        await asyncio.to_thread(self.append_events, table)

    async def append_columns_async(self, batches: list[ColumnBatch]) -> None:
        """Append column batches (see :data:`avila.storage.schema.ColumnBatch`) in one durable
        transaction, from the event loop."""
        await self.append_events_async(columns_to_arrow(batches))

    # -- the ingest log's loader (avila.storage.loader) calls these in the store's process ----

    def log_position(self) -> int:
        """The log position up to which the ingest log is loaded into this store."""
        raise NotImplementedError

    def pending_log_round(self) -> int:
        """End position of a loader round that may be partly stored (0: none).

        Backends whose round is one transaction (DuckDB) never have one. Others (ClickHouse)
        record a round's end before writing it; after a crash the loader's first round must end
        exactly there, so its blocks carry the same deduplication tokens as the first attempt."""
        return 0

    def commit_log_batch(
        self,
        position: int,
        *,
        events: pa.Table | None = None,
        devices: pa.Table | None = None,
        tables: Sequence[tuple[str, pa.Table]] = (),
    ) -> None:
        """Store rows loaded from the ingest log and record ``position``, exactly once: a round
        whose end is already recorded is skipped."""
        raise NotImplementedError

    # -- small-table writes (keyed rows): no dialect in callers ------------------------------
    # Table and column names are checked against the catalog; values are bound as parameters.

    def insert_new(self, table: str, key: Sequence[str], row: Mapping[str, Any]) -> bool:
        """Insert ``row`` unless a row with the same ``key`` columns exists; True if inserted."""
        raise NotImplementedError

    def upsert(self, table: str, key: Sequence[str], row: Mapping[str, Any]) -> None:
        """Insert ``row``, replacing the row with the same ``key`` columns if there is one."""
        raise NotImplementedError

    def update_rows(
        self,
        table: str,
        where: Mapping[str, Any],
        values: Mapping[str, Any],
        expect: Mapping[str, Any] | None = None,
    ) -> int:
        """Set ``values`` on the rows matching ``where`` (and ``expect``, a compare-and-set
        condition); returns how many rows changed."""
        raise NotImplementedError

    def update_many(self, table: str, key: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> int:
        """Per row: set its other columns on the stored row with its ``key`` values."""
        raise NotImplementedError

    #: Whether the backend keeps the daily rollups (:mod:`avila.storage.rollups`) beside the
    #: events; readers without them compute from raw rows.
    has_rollups = False
    #: Whether the backend keeps each user's active days in one row beside the rollups
    #: (:mod:`avila.storage.user_history`).
    has_user_history = False
    #: Whether the backend keeps sessions as events are written (:mod:`avila.storage.
    #: session_table`).
    has_kept_sessions = False

    def settle_kept_sessions(self) -> None:
        """Cut the sessions of events written since the last cut (a sessions read calls it
        first; see :class:`avila.storage.session_table.Upkeep`)."""
        return None

    def compact_rollups(self, max_days: int = 8) -> Compacted:
        """Sum the partial rollup rows of up to ``max_days`` (table, day) pairs that many small
        writes made grow (:func:`avila.storage.rollups.compact`): how many were compacted, and
        whether days are left."""
        return Compacted()

    def order_event_days(self, max_days: int = 1) -> Compacted:
        """Rewrite up to ``max_days`` finished days of events in (project, user, time) order
        (:mod:`avila.storage.event_order`): how many were rewritten, and whether days are
        left. Stores that keep their own order (ClickHouse's sort key) do nothing."""
        return Compacted()

    def fold_user_history(self, max_folds: int = 1) -> Compacted:
        """Take up to ``max_folds`` chunks of finished user days into the per-user history
        (:mod:`avila.storage.user_history`): how many folds were done (``days``), and whether
        more are due. Stores without the rollups do nothing."""
        return Compacted()

    def execute_all(self, statements: Sequence[Statement]) -> list[int]:
        """Run the statements in order in one transaction: all or none; returns what
        :meth:`execute` returns for each. Only backends with transactions (DuckDB) have it."""
        raise NotImplementedError

    def erase_users(self, project_id: str, user_ids: Sequence[str], *, links: bool) -> int:
        """Delete every event of ``user_ids`` in the project (GDPR), and with ``links`` every
        identity link naming one of them; derived tables (rollups) forget them in the same
        transaction. Returns the number of events deleted."""
        deleted = self.delete_rows("events", {"project_id": project_id, "user_id": user_ids})
        if links:
            self.delete_rows("identities", {"project_id": project_id, "user_id": user_ids})
            self.delete_rows("identities", {"project_id": project_id, "anonymous_id": user_ids})
        return deleted

    def delete_rows(self, table: str, where: Mapping[str, Any]) -> int:
        """Delete the rows matching ``where`` (column = value; a list or tuple value means IN;
        several entries are AND-ed); returns how many were deleted."""
        raise NotImplementedError

    @abstractmethod
    def recent_event_keys(self, since: datetime) -> Iterator[tuple[str, str]]:
        """``(project_id, event_id)`` of every event received at or after ``since`` (UTC)."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query with positional parameters; rows as tuples."""

    @abstractmethod
    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Run a read query with positional parameters; result as an Arrow table."""

    @abstractmethod
    def query_batches(
        self, sql: str, params: Sequence[Any] | None = None, batch_rows: int = 65536
    ) -> Generator[pa.RecordBatch, None, None]:
        """Stream a read query's result in Arrow record batches (constant memory); ``close()``
        the generator to stop early (the query stops)."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Run one write statement in its own transaction; returns affected rows if known."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot answer a trivial query."""

    @abstractmethod
    def close(self) -> None:
        """Release the database; pending transactions are already committed."""
