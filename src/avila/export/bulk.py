"""Bulk import straight into the DuckDB store: ``avila import`` without ``--url``.

Why not through the ingest log: the log is built for many small requests (each entry is
encoded, fsynced, decoded and loaded again); a file of millions of rows is already one durable
source. So the import validates record batches column-wise (:mod:`avila.export.columnar`) and
appends them to ``events`` inside **one transaction**:

1. the ingest log is opened and its unloaded backlog loaded first (so its events count for
   deduplication, as in the API);
2. every accepted row is appended with one receive time, ``received_at`` = the import's start,
   unique to this import (checked);
3. duplicates are deleted in the same transaction: a row whose event id appeared earlier in the
   file, or is already stored with a ``received_at`` inside the dedup window
   (``AVILA_DEDUP_WINDOW_HOURS``) - the API's rule;
4. identity links of ``$identify``/``$alias`` events go in with their rows; then COMMIT.

Crash safety: nothing is visible until the commit, and a crash before it leaves the store as it
was (DuckDB rolls the transaction back on restart). Exactly once: after the commit every row's
id is stored with a fresh ``received_at``, so running the same import again within the window
stores nothing new (all rows count as duplicates).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from avila.export.columnar import Checked, ColumnarValidator
from avila.export.importer import ImportSummary, RowRejection
from avila.export.reader import _CSV_TYPES
from avila.storage.duckdb.store import DuckDBStore

#: Rows per validated batch (Parquet/CSV/NDJSON): large enough that per-batch costs vanish.
BULK_BATCH_ROWS = 100_000
_US = timedelta(microseconds=1)


@dataclass
class Batch:
    """Validated rows of one read step and how far the file has been read (bytes; Parquet:
    rows)."""

    checked: Checked
    rows: int
    progress: int


def _parquet_batches(
    path: Path, validator: ColumnarValidator, batch_rows: int
) -> Iterator[Batch]:
    file = pq.ParquetFile(path)
    done = 0
    for batch in file.iter_batches(batch_size=batch_rows):
        checked = validator.flat(batch, done + 1)
        done += batch.num_rows
        yield Batch(checked, batch.num_rows, done)


class _Counting:
    """A binary file that counts the bytes read (CSV progress)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.count = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _csv_batches(path: Path, validator: ColumnarValidator, batch_rows: int) -> Iterator[Batch]:
    with open(path, "rb") as raw:
        counting = _Counting(raw)
        reader = pa_csv.open_csv(
            counting,
            read_options=pa_csv.ReadOptions(block_size=16 << 20),
            convert_options=pa_csv.ConvertOptions(
                column_types=_CSV_TYPES,
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        done = 0
        for big in reader:
            for batch in pa.Table.from_batches([big]).to_batches(batch_rows):
                checked = validator.flat(batch, done + 1)
                done += batch.num_rows
                yield Batch(checked, batch.num_rows, counting.count)


def _ndjson_batches(
    path: Path, validator: ColumnarValidator, batch_rows: int
) -> Iterator[Batch]:
    lines: list[bytes] = []
    numbers: list[int] = []
    read = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            read += len(line)
            if not line.strip():
                continue
            lines.append(line)
            numbers.append(number)
            if len(lines) >= batch_rows:
                yield Batch(validator.lines(lines, numbers), len(lines), read)
                lines, numbers = [], []
    if lines:
        yield Batch(validator.lines(lines, numbers), len(lines), read)


_READERS: dict[str, Callable[[Path, ColumnarValidator, int], Iterator[Batch]]] = {
    "parquet": _parquet_batches,
    "csv": _csv_batches,
    "ndjson": _ndjson_batches,
}


def _unique_stamp(cursor: Any, project_id: str) -> datetime:
    """Now (naive UTC, µs), moved on until no stored row of the project was received then."""
    stamp = datetime.now(UTC).replace(tzinfo=None)
    while cursor.execute(
        "SELECT count(*) FROM events WHERE project_id = ? AND received_at = ?", [project_id, stamp]
    ).fetchall()[0][0]:
        stamp += _US
    return stamp


def _delete_duplicates(cursor: Any, project_id: str, stamp: datetime, since: datetime) -> int:
    """Delete this import's rows whose id came earlier in the file or is stored inside the
    dedup window; returns how many."""
    rows = cursor.execute(
        "DELETE FROM events WHERE rowid IN ("
        # later rows of an id the import holds more than once (rowid follows the file's order)
        " SELECT e.rowid FROM events e JOIN (SELECT event_id, min(rowid) AS first FROM events"
        "  WHERE project_id = $p AND received_at = $stamp GROUP BY event_id HAVING count(*) > 1)"
        "  d ON d.event_id = e.event_id"
        "  WHERE e.project_id = $p AND e.received_at = $stamp AND e.rowid <> d.first"
        " UNION"
        # ids stored before, received inside the window
        " SELECT m.rowid FROM events m WHERE m.project_id = $p AND m.received_at = $stamp"
        "  AND m.event_id IN (SELECT event_id FROM events WHERE project_id = $p"
        "  AND received_at >= $since AND received_at <> $stamp))",
        {"p": project_id, "stamp": stamp, "since": since},
    ).fetchall()
    return int(rows[0][0]) if rows else 0


def _store_identity_links(cursor: Any, project_id: str, stamp: datetime) -> None:
    from avila.identity import LINK_EVENTS, links_from_rows
    from avila.ingest.validation import EventRows

    names = list(LINK_EVENTS)
    table = cursor.sql(
        "SELECT * FROM events WHERE project_id = ? AND received_at = ? AND event_type = 'custom'"
        f" AND event_name IN ({', '.join('?' for _ in names)})",
        params=[project_id, stamp, *names],
    ).to_arrow_table()
    if table.num_rows == 0:
        return
    columns = {
        name: (
            table.column(name).cast(pa.int64()) if name in ("ts", "received_at") else table[name]
        ).to_pylist()
        for name in table.column_names
    }
    links = links_from_rows(EventRows(project_id, stamp, columns))
    if links is not None:
        cursor.from_arrow(links).insert_into("identities")


def bulk_import(
    path: Path,
    fmt: str,
    store: DuckDBStore,
    project_id: str,
    *,
    dedup_window_hours: float = 24,
    batch_rows: int = BULK_BATCH_ROWS,
    on_batch: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import ``path`` into ``store`` in one transaction; ``on_batch`` sees the read progress
    (bytes; Parquet: rows) after each batch. The store's ingest log must be configured
    (``store.ingest_log_config``) or have its default place."""
    progress = store.load_progress
    store.open_ingest_log()
    # The unloaded backlog first: its events take part in deduplication like stored ones.
    if not progress.wait_loaded(progress.durable, 600):
        from avila.errors import StorageUnavailable

        raise StorageUnavailable("the ingest log's backlog did not load; try again")
    summary = ImportSummary()
    with store.bulk_transaction() as cursor:
        stamp = _unique_stamp(cursor, project_id)
        validator = ColumnarValidator(project_id, stamp)
        stored = 0
        for batch in _READERS[fmt](path, validator, batch_rows):
            summary.rows += batch.rows
            for r in batch.checked.rejected:
                summary.reject(RowRejection(r.row, r.code, r.message, r.path))
            accepted = batch.checked.accepted
            if accepted.num_rows:
                cursor.from_arrow(accepted.drop_columns(["row"])).insert_into("events")
                stored += accepted.num_rows
            summary.slow_rows += batch.checked.slow_rows
            if on_batch is not None:
                on_batch(batch.progress)
        started = time.perf_counter()
        since = stamp - timedelta(hours=dedup_window_hours)
        summary.duplicates = _delete_duplicates(cursor, project_id, stamp, since) if stored else 0
        summary.accepted = stored - summary.duplicates
        _store_identity_links(cursor, project_id, stamp)
        summary.finish_seconds = time.perf_counter() - started
    return summary
