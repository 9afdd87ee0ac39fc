"""Bulk import straight into the DuckDB store: ``avila import`` without ``--url``.

Why not through the ingest log: the log is built for many small requests (each entry is
encoded, fsynced, decoded and loaded again); a file of millions of rows is already one durable
source. So the import validates record batches column-wise (:mod:`avila.export.columnar`) and
appends them to ``events`` inside **one transaction**:

1. the ingest log is opened and its unloaded backlog loaded first (so its events count for
   deduplication, as in the API);
2. a first pass over the event-id column alone finds the rows that *may* be duplicates
   (:mod:`avila.export.duplicates`): their raw id occurs twice in the file or is stored with a
   ``received_at`` inside the dedup window (``AVILA_DEDUP_WINDOW_HOURS``), the API's rule;
3. the second pass validates batch after batch in a thread and streams every accepted row that
   is not a candidate into one ``INSERT``, which DuckDB appends on all its threads
   (:mod:`avila.export.import_stream`; the candidates go to a file meanwhile), with one
   receive time, ``received_at`` = the import's start, unique in the store (checked);
4. the held-back candidates are judged exactly by id (the first accepted row of an id wins,
   unless the id is stored in the window) and the survivors appended; deleting rows instead
   would make DuckDB rewrite the transaction's data at commit (measured 3.7 CPU s per million);
5. the daily rollups (:mod:`avila.storage.rollups`) are computed once from the imported rows,
   identity links of ``$identify``/``$alias`` events go in; then COMMIT.

Crash safety: nothing is visible until the commit, and a crash before it leaves the store as it
was (DuckDB rolls the transaction back on restart). Exactly once: after the commit every row's
id is stored with a fresh ``received_at``, so running the same import again within the window
stores nothing new (all rows count as duplicates).
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avila.export.checked import ACCEPTED_SCHEMA, Checked, Rejected
from avila.export.columnar import ColumnarValidator
from avila.export.csvrows import MALFORMED_CSV, BadRow, CsvBlock, CsvRows, parse_numbers
from avila.export.duplicates import Candidates, candidate_rows
from avila.export.import_stream import Intake
from avila.export.importer import ImportSummary
from avila.export.reader import ndjson_batches, read_guarded, reading
from avila.storage import purchase_table, rollups, session_table
from avila.storage.duckdb.store import DuckDBStore

#: Rows per validated batch: DuckDB's row group (122,880 rows) so that every append fills
#: whole row groups (100,000-row appends measured ~40 % more insert CPU per row).
BULK_BATCH_ROWS = 122_880
_US = timedelta(microseconds=1)


@dataclass
class Batch:
    """One read step, validated and split: the rows of ``append`` that ``keep`` marks (all
    when None) go in now, ``held`` rows are possible duplicates; plus rejections and how far
    the file has been read (bytes; Parquet: rows)."""

    append: list[tuple[pa.Table, np.ndarray | None]]
    held: list[pa.Table]
    rejected: list[Rejected]
    rows: int
    slow_rows: int
    progress: int


class _Splitter:
    """Validates raw record batches (or NDJSON lines) and splits the accepted rows into
    "append now" and "held back" (their row number is a candidate)."""

    def __init__(self, validator: ColumnarValidator, candidates: Candidates) -> None:
        self.validator = validator
        self.candidates = candidates.rows
        self.after = candidates.after

    def _maybe(self, table: pa.Table) -> np.ndarray | None:
        """Which rows of ``table`` are candidates (None: none)."""
        if table.num_rows == 0:
            return None
        numbers = table.column("row").to_numpy()
        if self.after is not None and int(numbers.max()) > self.after:
            beyond = numbers > self.after
        elif not len(self.candidates):
            return None
        else:
            beyond = None
        if len(self.candidates):
            at = np.searchsorted(self.candidates, numbers)
            at[at == len(self.candidates)] = 0
            maybe = self.candidates[at] == numbers
            if beyond is not None:
                maybe |= beyond
        else:
            maybe = beyond
        return maybe if maybe is not None and maybe.any() else None

    def split(self, checked: Checked, rows: int, progress: int) -> Batch:
        append: list[tuple[pa.Table, np.ndarray | None]] = []
        held: list[pa.Table] = []
        for table, keep in ((checked.fast, checked.keep), (checked.slow, None)):
            maybe = self._maybe(table)
            if maybe is not None:
                hold = maybe if keep is None else maybe & keep
                if hold.any():
                    held.append(table.filter(pa.array(hold)))
                keep = ~maybe if keep is None else keep & ~maybe
            if table.num_rows and (keep is None or keep.any()):
                append.append((table, keep))
        return Batch(append, held, checked.rejected, rows, checked.slow_rows, progress)


def _parquet_batches(path: Path, splitter: _Splitter, batch_rows: int) -> Iterator[Batch]:
    with reading(path, "parquet"):
        file = pq.ParquetFile(path)
    done = 0
    for batch in read_guarded(path, "parquet", file.iter_batches(batch_size=batch_rows)):
        checked = splitter.validator.flat(batch, done + 1)
        done += batch.num_rows
        yield splitter.split(checked, batch.num_rows, done)


def _csv_batches(path: Path, splitter: _Splitter, batch_rows: int) -> Iterator[Batch]:
    """Rows the CSV parser rejects (:mod:`avila.export.csvrows`) join the rejections of the
    batch their row number falls in; number columns are converted per batch."""
    for batch, rows, bad, progress in _rebatched(CsvRows(path, block_size=16 << 20), batch_rows):
        if batch.num_rows:
            batch, unparsed = parse_numbers(batch)
            checked = splitter.validator.flat(batch, rows, unparsed)
        else:
            checked = Checked(ACCEPTED_SCHEMA.empty_table())
        if bad:
            malformed = [Rejected(b.row, MALFORMED_CSV, b.message, b.path) for b in bad]
            checked.rejected = sorted([*checked.rejected, *malformed], key=lambda r: r.row)
        yield splitter.split(checked, batch.num_rows + len(bad), progress)


_ROW = "__avila_row"


def _rebatched(
    blocks: Iterable[CsvBlock], batch_rows: int
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[BadRow], int]]:
    """``(batch, row numbers, bad rows, progress)`` with batches of exactly ``batch_rows`` rows
    (the last one fewer) from the CSV reader's batches of one block each; each bad row goes
    with the batch its number falls in (the last batch: every one left)."""
    pending: list[pa.RecordBatch] = []  # each with its row numbers as a last column
    count = 0
    bad: list[BadRow] = []
    progress = 0
    schema: pa.Schema | None = None

    def out(
        batch: pa.RecordBatch, last: bool
    ) -> tuple[pa.RecordBatch, np.ndarray, list[BadRow], int]:
        nonlocal bad
        rows = batch.column(batch.num_columns - 1).to_numpy()
        upto = int(rows[-1]) if len(rows) and not last else None
        taken = [b for b in bad if upto is None or b.row <= upto]
        bad = bad[len(taken) :]
        return batch.drop_columns([_ROW]), rows, taken, progress

    for block in blocks:
        bad.extend(block.bad)
        progress = block.progress
        numbered = block.batch.append_column(_ROW, pa.array(block.rows, pa.int64()))
        schema = numbered.schema
        if block.batch.num_rows:
            pending.append(numbered)
            count += block.batch.num_rows
        if count < batch_rows:
            continue
        table = pa.Table.from_batches(pending)
        full = count - count % batch_rows
        for batch in table.slice(0, full).combine_chunks().to_batches(batch_rows):
            yield out(batch, False)
        rest = table.slice(full)
        pending = rest.combine_chunks().to_batches() if rest.num_rows else []
        count = rest.num_rows
    if count:
        *most, last = pa.Table.from_batches(pending).combine_chunks().to_batches()
        for batch in most:
            yield out(batch, False)
        yield out(last, True)
    elif bad and schema is not None:
        empty = [pa.array([], f.type) for f in schema]
        yield out(pa.RecordBatch.from_arrays(empty, schema=schema), True)


def _ndjson_batches(path: Path, splitter: _Splitter, batch_rows: int) -> Iterator[Batch]:
    for lines, numbers, read in ndjson_batches(path, batch_rows):
        yield splitter.split(splitter.validator.lines(lines, numbers), len(lines), read)


_READERS: dict[str, Callable[[Path, _Splitter, int], Iterator[Batch]]] = {
    "parquet": _parquet_batches,
    "csv": _csv_batches,
    "ndjson": _ndjson_batches,
}


def _prefetched(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Read and validate the next batches in a thread while DuckDB's threads append the ones
    before (they release the GIL while they compress and write)."""
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


def _unique_stamp(cursor: Any) -> datetime:
    """Now (naive UTC, µs), moved on until no stored row (of any project) was received then:
    the import's rows are then exactly the rows with this ``received_at``."""
    stamp = datetime.now(UTC).replace(tzinfo=None)
    while cursor.execute("SELECT count(*) FROM events WHERE received_at = ?", [stamp]).fetchall()[
        0
    ][0]:
        stamp += _US
    return stamp


def _received_then(stamp: datetime) -> str:
    """The events received at ``stamp`` as a subquery (the literal is our own clock's value,
    never user input)."""
    return f"(SELECT * FROM events WHERE received_at = TIMESTAMP '{stamp.isoformat(sep=' ')}')"


#: Held-back rows wait in a temporary DuckDB table for their judgement (:func:`_store_candidates`).
_HELD = "_import_held"


def _spill_place(store: DuckDBStore) -> tuple[Path | None, str]:
    """Where held-back rows wait (:class:`Intake`): beside the store, whose disk has room for
    the import (the system's temporary directory for a store in memory), in a directory named
    after the store file."""
    if str(store.path) == ":memory:":
        return None, "avila-import-held-"
    return store.path.parent, f"{store.path.name}.import-held-"


def _store_candidates(cursor: Any, project_id: str, since: datetime) -> int:
    """Append the held-back rows that are not duplicates after all; returns how many. A row is
    a duplicate when its event id is stored with ``received_at`` inside the window (this import's
    rows included) or an earlier accepted row of the file has it."""
    kept = cursor.execute(
        f"INSERT INTO events SELECT c.* EXCLUDE (row) FROM {_HELD} c WHERE c.event_id NOT IN ("
        " SELECT event_id FROM events WHERE project_id = $p AND received_at >= $since"
        f" AND event_id IN (SELECT event_id FROM {_HELD}))"
        " QUALIFY row_number() OVER (PARTITION BY c.event_id ORDER BY c.row) = 1",
        {"p": project_id, "since": since},
    ).fetchall()
    cursor.execute(f"DROP TABLE {_HELD}")
    return int(kept[0][0])


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
    on_batch: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import ``path`` into ``store`` in one transaction; ``on_batch`` sees the read progress
    (bytes; Parquet: rows) and the rows read so far after each batch. The store's ingest log must be configured
    (``store.ingest_log_config``) or have its default place."""
    progress = store.load_progress
    store.open_ingest_log()
    # The unloaded backlog first: its events take part in deduplication like stored ones.
    if not progress.wait_loaded(progress.durable, 600):
        from avila.errors import StorageUnavailable

        raise StorageUnavailable("the ingest log's backlog did not load; try again")
    summary = ImportSummary()
    # Validation makes and drops millions of short-lived objects: the cyclic collector's passes
    # over them cost ~4 % of an import's CPU (perf) and find next to nothing to free.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _import(
            path, fmt, store, project_id, summary, dedup_window_hours, batch_rows, on_batch
        )
    finally:
        if collecting:
            gc.enable()


def _import(
    path: Path,
    fmt: str,
    store: DuckDBStore,
    project_id: str,
    summary: ImportSummary,
    dedup_window_hours: float,
    batch_rows: int,
    on_batch: Callable[[int, int], None] | None,
) -> ImportSummary:
    with store.bulk_transaction() as cursor:
        stamp = _unique_stamp(cursor)
        since = stamp - timedelta(hours=dedup_window_hours)
        splitter = _Splitter(
            ColumnarValidator(project_id, stamp),
            candidate_rows(path, fmt, cursor, project_id, since),
        )
        batches = _prefetched(_READERS[fmt](path, splitter, batch_rows))
        with Intake(batches, summary, on_batch, *_spill_place(store)) as intake:
            intake.insert(cursor)
            started = time.perf_counter()
            held = intake.held()
            kept = 0
            if held is not None:
                cursor.register("_import_held_rows", held)
                try:
                    cursor.execute(f"CREATE TEMP TABLE {_HELD} AS SELECT * FROM _import_held_rows")
                finally:
                    cursor.unregister("_import_held_rows")
                kept = _store_candidates(cursor, project_id, since)
        summary.accepted = intake.appended + kept
        summary.duplicates = intake.held_rows - kept
        rollups.add_events(cursor, _received_then(stamp))
        purchase_table.add_events(cursor, _received_then(stamp))
        session_table.add_events(cursor, _received_then(stamp))
        _store_identity_links(cursor, project_id, stamp)
        summary.finish_seconds = time.perf_counter() - started
    return summary
