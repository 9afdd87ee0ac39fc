"""The ClickHouse store's side of the ingest log's loader: the recorded log position, and each
loader round stored exactly once without transactions (pending mark, one block per table tagged
with an ``insert_deduplication_token``, new position), with the rule for when a failed round
provably stored nothing (:meth:`ClickHouseLogRounds.commit_log_batch`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from avila.errors import StorageUnavailable
from avila.storage.clickhouse.rows import ClickHouseRows
from avila.storage.clickhouse.target import ClickHouseTarget
from avila.storage.ingest_log import IngestLogConfig, default_log_dir
from avila.storage.load_rounds import NothingStored
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA

log = logging.getLogger("avila.storage")

#: File in the ingest log's directory naming the log in ``ingest_position`` (a replica's log
#: keeps its id across restarts and host names; two logs never share a position).
LOG_ID_FILE = "clickhouse-log-id"

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


class ClickHouseLogRounds(ClickHouseRows):
    """Base of :class:`avila.storage.clickhouse.store.ClickHouseStore`: the loader's rounds."""

    target: ClickHouseTarget
    _log_id: str

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
