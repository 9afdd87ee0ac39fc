"""The accepted rows of a bulk import as one Arrow stream, appended by a single INSERT.

Why one statement: DuckDB appends a streamed source with all its threads (each takes the next
record batch and compresses its own row groups), while one ``INSERT`` per batch appends on one
thread. On two cores the same 3 M validated rows went in 1.7-1.9x faster in wall time for the
same CPU (benchmarks/RESULTS.md, "Bulk import in one streamed INSERT").

:class:`Intake` turns the validated batches into the stream: it counts rows and rejections into
the :class:`~avila.export.importer.ImportSummary`, reports progress, and writes the held-back
rows (possible duplicates, judged after the stream) to an Arrow IPC file beside the store
instead of keeping them in memory: re-importing a file that is already stored holds back
every row. It runs inside DuckDB's scan, on whichever of its threads pulls the next batch.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from avila.export.checked import ACCEPTED_SCHEMA
from avila.export.importer import ImportSummary, RowRejection
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA

if TYPE_CHECKING:
    from avila.export.bulk import Batch

#: The stream's rows: the stored columns and whether the row goes in (the validator's mask:
#: DuckDB filters while it appends, no column is copied to drop a row).
KEEP = "_keep"
STREAM_SCHEMA = EVENT_SCHEMA.append(pa.field(KEEP, pa.bool_()))
_STORED = ", ".join(f'"{name}"' for name in EVENT_COLUMN_NAMES)
#: how often the waiting main thread wakes to let a signal (Ctrl-C) in
_WAKE_S = 0.2
#: how long an interrupted import waits for DuckDB to let go of the connection
_FREE_WITHIN_S = 30.0


class Intake:
    """Feeds one import's validated batches to the store; see the module docstring. Use as a
    context manager: the held rows' file (in a directory of ``spill_dir`` named
    ``spill_prefix`` and a random suffix) is deleted when it ends; such directories a killed
    import left behind are deleted when the next one starts."""

    def __init__(
        self,
        batches: Iterator[Batch],
        summary: ImportSummary,
        on_batch: Callable[[int, int], None] | None,
        spill_dir: Path | None,
        spill_prefix: str,
    ) -> None:
        self._batches = batches
        self.summary = summary
        self._on_batch = on_batch
        self._spill_dir = spill_dir
        self._spill_prefix = spill_prefix
        if spill_dir is not None:
            # Left by an import that was killed: the caller holds the store's write lock, so
            # no other import of this store can be using them.
            for stale in spill_dir.glob(f"{spill_prefix}*"):
                shutil.rmtree(stale, ignore_errors=True)
        self._exit = ExitStack()
        self._held_path: Path | None = None
        self._held: pa.ipc.RecordBatchFileWriter | None = None
        #: rows appended by the stream (kept by their mask) and rows held back
        self.appended = 0
        self.held_rows = 0
        #: what the batches raised, if they did: DuckDB reports it as its own error
        self.error: BaseException | None = None
        self._stop = threading.Event()

    def __enter__(self) -> Intake:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held is not None:
            self._held.close()
        self._exit.close()

    def insert(self, cursor: Any) -> None:
        """Append every accepted row that is not held back, in one ``INSERT``; raises what the
        batches raised (a read or validation error) rather than DuckDB's wrapping of it.

        The statement runs in a thread while this (the main) thread waits in Python: a signal
        reaches Python code only in the main thread, so Ctrl-C stays an interrupt (the
        statement is cancelled, and the caller's transaction rolls back) instead of waiting
        for the whole file."""
        steps = _Steps(self._records())
        stream = pa.RecordBatchReader.from_batches(STREAM_SCHEMA, steps)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                cursor.from_arrow(stream).filter(KEEP).project(_STORED).insert_into("events")
            except BaseException as exc:  # raised again in the waiting thread
                failed.append(exc)

        worker = threading.Thread(target=run, name="import-insert", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(_WAKE_S)
        except BaseException:
            self._stop.set()
            cursor.interrupt()
            worker.join()
            _wait_free(cursor)
            raise
        finally:
            # The statement may return while one of DuckDB's threads still pulls a batch;
            # the connection is free again once that step is over.
            steps.close()
        if failed:
            if self.error is not None:
                raise self.error from None
            raise failed[0]

    def held(self) -> pa.Table | None:
        """The held-back rows (:data:`~avila.export.checked.ACCEPTED_SCHEMA`), memory-mapped
        from their file; None when no row was held back."""
        if self._held is None or self._held_path is None:
            return None
        self._held.close()
        self._held = None
        source = self._exit.enter_context(pa.memory_map(str(self._held_path)))
        return pa.ipc.open_file(source).read_all()

    def _records(self) -> Generator[pa.RecordBatch, None, None]:
        try:
            for batch in self._batches:
                if self._stop.is_set():
                    raise InterruptedError("the import was interrupted")
                yield from self._take(batch)
        except GeneratorExit:  # closed: not an error of the batches
            raise
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            # Stops their reading thread now, not when the garbage collector finds them.
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()

    def _take(self, batch: Batch) -> Iterator[pa.RecordBatch]:
        summary = self.summary
        summary.rows += batch.rows
        for r in batch.rejected:
            summary.reject(RowRejection(r.row, r.code, r.message, r.path))
        summary.slow_rows += batch.slow_rows
        for table in batch.held:
            self._hold(table)
        for table, keep in batch.append:
            n = table.num_rows
            self.appended += n if keep is None else int(keep.sum())
            mask = pa.array(np.ones(n, np.bool_) if keep is None else keep)
            yield from table.drop_columns(["row"]).append_column(KEEP, mask).to_batches()
        if self._on_batch is not None:
            self._on_batch(batch.progress, summary.rows)

    def _hold(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self._held is None:
            directory = self._exit.enter_context(
                tempfile.TemporaryDirectory(prefix=self._spill_prefix, dir=self._spill_dir)
            )
            self._held_path = Path(directory) / "held.arrow"
            self._held = pa.ipc.new_file(str(self._held_path), ACCEPTED_SCHEMA)
        if not table.schema.equals(ACCEPTED_SCHEMA):
            table = table.cast(ACCEPTED_SCHEMA)
        self._held.write_table(table)
        self.held_rows += table.num_rows


def _wait_free(cursor: Any) -> None:
    """Wait until the connection takes a statement again: an interrupted statement returns
    while DuckDB's threads may still be finishing its tasks (the connection refuses a call
    meanwhile), and the caller's ROLLBACK must not be refused."""
    import duckdb

    deadline = time.monotonic() + _FREE_WITHIN_S
    while True:
        try:
            cursor.execute("SELECT 1").fetchall()
        except duckdb.ResourceInUseException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        except duckdb.Error:  # it answered: the aborted transaction refuses all but ROLLBACK
            pass
        return


class _Steps:
    """An iterator's steps one at a time under a lock: :meth:`close` waits for a step in
    flight (in another thread) to end before it closes the generator."""

    def __init__(self, generator: Generator[pa.RecordBatch, None, None]) -> None:
        self._generator = generator
        self._lock = threading.Lock()

    def __iter__(self) -> _Steps:
        return self

    def __next__(self) -> pa.RecordBatch:
        with self._lock:
            return next(self._generator)

    def close(self) -> None:
        with self._lock:
            self._generator.close()
