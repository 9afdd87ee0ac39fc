"""Bulk import straight into the DuckDB store: ``avila import`` without ``--url``.

Why not through the ingest log: the log is built for many small requests (each entry is
encoded, fsynced, decoded and loaded again); a file of millions of rows is already one durable
source. So the import validates record batches column-wise (:mod:`avila.export.columnar`) and
appends them to ``events`` inside **one transaction**:

1. the ingest log is opened and its unloaded backlog loaded first (so its events count for
   deduplication, as in the API);
2. every accepted row is appended with one receive time, ``received_at`` = the import's start,
   unique to this import (checked);
3. duplicates are left out: a row whose event id appeared earlier in the file, or is already
   stored with a ``received_at`` inside the dedup window (``AVILA_DEDUP_WINDOW_HOURS``) - the
   API's rule. A 64-bit hash per id (:class:`SeenIds`) finds the *candidates* while reading;
   they are held back and checked exactly by id at the end (deleting rows instead would make
   DuckDB rewrite the whole transaction's data at commit: measured 3.7 CPU s per million rows);
4. identity links of ``$identify``/``$alias`` events go in with their rows; then COMMIT.

Crash safety: nothing is visible until the commit, and a crash before it leaves the store as it
was (DuckDB rolls the transaction back on restart). Exactly once: after the commit every row's
id is stored with a fresh ``received_at``, so running the same import again within the window
stores nothing new (all rows count as duplicates).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from avila.export.columnar import Checked, ColumnarValidator
from avila.export.importer import ImportSummary, RowRejection
from avila.export.reader import _CSV_TYPES, CountingReader
from avila.storage.duckdb.store import DuckDBStore, insert_events

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


def _parquet_batches(path: Path, validator: ColumnarValidator, batch_rows: int) -> Iterator[Batch]:
    file = pq.ParquetFile(path)
    done = 0
    for batch in file.iter_batches(batch_size=batch_rows):
        checked = validator.flat(batch, done + 1)
        done += batch.num_rows
        yield Batch(checked, batch.num_rows, done)


def _csv_batches(path: Path, validator: ColumnarValidator, batch_rows: int) -> Iterator[Batch]:
    with open(path, "rb") as raw:
        counting = CountingReader(raw)
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


def _ndjson_batches(path: Path, validator: ColumnarValidator, batch_rows: int) -> Iterator[Batch]:
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


def _prefetched(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Read and validate the next batch in a thread while the caller stores this one: DuckDB
    releases the GIL while it inserts, so on two cores the halves overlap."""
    ready: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            ready.put(exc)

    worker = threading.Thread(target=produce, name="import-read", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _unique_stamp(cursor: Any, project_id: str) -> datetime:
    """Now (naive UTC, µs), moved on until no stored row of the project was received then."""
    stamp = datetime.now(UTC).replace(tzinfo=None)
    while cursor.execute(
        "SELECT count(*) FROM events WHERE project_id = ? AND received_at = ?", [project_id, stamp]
    ).fetchall()[0][0]:
        stamp += _US
    return stamp


class SeenIds:
    """64-bit hashes of the event ids seen so far, as sorted runs (memory: 8 bytes per id).

    A hash seen before only makes a row a *candidate* duplicate: candidates are held back and
    checked exactly, by event id, before the commit (:func:`_store_candidates`), so a hash
    collision never drops an event."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def check_and_add(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each hash was seen before (in an earlier batch or earlier in this one)."""
        seen = np.zeros(len(hashes), dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            seen |= run[at] == hashes
        distinct, first = np.unique(hashes, return_index=True)
        repeated = np.ones(len(hashes), dtype=bool)
        repeated[first] = False
        seen |= repeated
        self.add(distinct)
        return seen

    def add(self, sorted_distinct: np.ndarray) -> None:
        self.runs.append(sorted_distinct)
        # Merge runs of similar size (a log-structured set: few runs, each sorted).
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            last = self.runs.pop()
            self.runs[-1] = np.union1d(self.runs[-1], last)


def _hashes(cursor: Any, event_ids: pa.Array) -> np.ndarray:
    table = pa.table({"event_id": event_ids})
    found = cursor.from_arrow(table).project("hash(event_id) AS h").fetchnumpy()["h"]
    return np.asarray(found, dtype=np.uint64)


def _store_candidates(
    cursor: Any, project_id: str, since: datetime, candidates: list[pa.Table]
) -> int:
    """Insert the held-back rows that are not duplicates after all; returns how many. A row is
    a duplicate when its event id is stored with ``received_at`` inside the window (this import's
    rows included) or an earlier row of the file has it."""
    if not candidates:
        return 0
    table = pa.concat_tables(candidates)
    cursor.register("_import_candidates", table)
    try:
        kept = cursor.sql(
            "SELECT c.* EXCLUDE (row) FROM _import_candidates c WHERE c.event_id NOT IN ("
            " SELECT event_id FROM events WHERE project_id = $p AND received_at >= $since"
            " AND event_id IN (SELECT event_id FROM _import_candidates))"
            " QUALIFY row_number() OVER (PARTITION BY c.event_id ORDER BY c.row) = 1",
            params={"p": project_id, "since": since},
        ).to_arrow_table()
    finally:
        cursor.unregister("_import_candidates")
    if kept.num_rows:
        insert_events(cursor, kept)  # with its daily rollups
    return int(kept.num_rows)


def _store_identity_links(cursor: Any, project_id: str, stamp: datetime) -> None:
    from avila.identity import LINK_EVENTS, links_from_rows
    from avila.ingest.validation import EventRows
    from avila.storage import person_map

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
        person_map.links_added(cursor, links)


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
        since = stamp - timedelta(hours=dedup_window_hours)
        validator = ColumnarValidator(project_id, stamp)
        seen = SeenIds()
        stored = cursor.sql(
            "SELECT DISTINCT hash(event_id) AS h FROM events WHERE project_id = ?"
            " AND received_at >= ?",
            params=[project_id, since],
        ).fetchnumpy()["h"]
        if len(stored):
            seen.add(np.unique(np.asarray(stored, dtype=np.uint64)))
        candidates: list[pa.Table] = []
        candidate_rows = 0
        inserted = 0
        for batch in _prefetched(_READERS[fmt](path, validator, batch_rows)):
            summary.rows += batch.rows
            for r in batch.checked.rejected:
                summary.reject(RowRejection(r.row, r.code, r.message, r.path))
            accepted = batch.checked.accepted
            if accepted.num_rows:
                maybe = seen.check_and_add(_hashes(cursor, accepted.column("event_id")))
                if maybe.any():
                    candidates.append(accepted.filter(pa.array(maybe)))
                    candidate_rows += int(maybe.sum())
                    accepted = accepted.filter(pa.array(~maybe))
                insert_events(cursor, accepted.drop_columns(["row"]))
                inserted += accepted.num_rows
            summary.slow_rows += batch.checked.slow_rows
            if on_batch is not None:
                on_batch(batch.progress)
        started = time.perf_counter()
        kept = _store_candidates(cursor, project_id, since, candidates)
        summary.accepted = inserted + kept
        summary.duplicates = candidate_rows - kept
        _store_identity_links(cursor, project_id, stamp)
        summary.finish_seconds = time.perf_counter() - started
    return summary
