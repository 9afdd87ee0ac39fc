"""Exports encoded in a process of their own, away from the server's event loop.

Why (benchmarks/RESULTS.md, "Ingest while an export streams"): an export encoded in the server
process holds the interpreter's lock beside the event loop that acknowledges ingest. On the
100 M-event store a JSON export (msgspec over Python rows) took single-event ingest from p50
1.4 / p99 11 ms to p50 24 / p99 88 ms; CSV (pyarrow, which lets go of the lock) to 3.7 / 23.

How: :class:`ExportProcesses` hands each export a fresh process (at the query workers'
niceness, :data:`avila.analytics.workers.NICE`), started one export ahead so that only a
server's first export waits for the interpreter to start (a 100-row export: 0.4 s cold). The
process opens a read channel to the store process itself
(:class:`~avila.storage.duckdb.channels.RemoteReader`), validates the request, encodes the
export and writes its chunks into a pipe; the server relays them to the client. Bad filters
are raised in the server as if it had checked them itself (422 with the field path). A client
that leaves mid-way has the process killed: its read channels break and the store process
stops the query (:mod:`avila.storage.duckdb.process`).

Used when the store lets other processes read (``Store.read_address``, the DuckDB store
process) and ``AVILA_QUERY_WORKERS`` is not 0; otherwise the export runs in a server thread
(:class:`avila.export.stream.ExportStream`).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection

from avila.errors import StorageUnavailable
from avila.export.query import ExportRequest
from avila.export.writers import FORMATS, ExportFormat
from avila.storage.base import Store


def _export_main(address: str, authkey: bytes, conn: Connection) -> None:
    """An export process: imports its code, then waits for its one job ``(project_id,
    request)``; answers ``("ok", None)`` (or ``("err", exc)``), then the chunks as bytes, then
    ``b""``."""
    from avila.analytics.workers import NICE
    from avila.export.stream import open_export
    from avila.storage.duckdb.channels import RemoteReader

    os.nice(NICE)
    try:
        project_id, request = conn.recv()
    except (EOFError, OSError):  # the server closed without a job (shutdown)
        return
    try:
        store = RemoteReader(address, authkey, channels=1)
        stream = open_export(store, project_id, request)
        chunk = next(stream, None)
    except Exception as exc:
        conn.send(("err", exc))
        return
    conn.send(("ok", None))
    try:
        while chunk is not None:
            if chunk:
                conn.send_bytes(chunk)
            chunk = next(stream, None)
        conn.send_bytes(b"")
    except OSError:  # the server stopped reading: it is about to kill this process
        pass
    finally:
        stream.close()
        store.close()


class _Started:
    """An export process started ahead of its job (its imports take most of a second)."""

    def __init__(self, address: str, authkey: bytes) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_export_main, args=(address, authkey, child), name="avila-export", daemon=True
        )
        self.process.start()
        child.close()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class ExportProcess(Iterator[bytes]):
    """Byte chunks of one export made by a process of its own (see the module doc); the same
    use as :class:`~avila.export.stream.ExportStream`. Blocking: call from a worker thread."""

    def __init__(self, started: _Started, project_id: str, request: ExportRequest) -> None:
        self.format: ExportFormat = FORMATS[request.format]
        self._started = started
        self._chunks = started.conn
        try:
            self._chunks.send((project_id, request))
            # No time limit: a selective filter may scan a long time before its first row, as
            # in a server thread; a process that dies closes the pipe (EOFError).
            status, value = self._chunks.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise StorageUnavailable(
                "the export process exited at start", code="export_failed"
            ) from exc
        except BaseException:
            self.close()
            raise
        if status == "err":
            self.close()
            raise value

    def __next__(self) -> bytes:
        try:
            data = self._chunks.recv_bytes()
        except (EOFError, OSError) as exc:
            raise StorageUnavailable(
                "the export process exited mid-way", code="export_failed"
            ) from exc
        if not data:
            self.close()
            raise StopIteration
        return data

    def close(self) -> None:
        """Stop the process if it still runs (a client that left) and release the pipe."""
        self._started.stop()


class ExportProcesses:
    """Starts export processes for ``store``, one ahead: the first export of a server waits for
    a process to start, later ones find one ready (an idle process costs ~60 MB)."""

    def __init__(self, store: Store) -> None:
        assert store.read_address is not None
        self._address, self._authkey = store.read_address
        self._store = store
        self._spare: _Started | None = None
        self._lock = threading.Lock()
        self._closed = False

    def open(self, project_id: str, request: ExportRequest) -> ExportProcess:
        """Start ``request``'s export (blocking: validation and its first chunk)."""
        self._store.read_barrier()  # the process reads without waiting for the ingest loader
        with self._lock:
            started, self._spare = self._spare, None
        if started is None or not started.process.is_alive():
            started = _Started(self._address, self._authkey)
        threading.Thread(target=self._start_spare, name="avila-export-spare", daemon=True).start()
        return ExportProcess(started, project_id, request)

    def _start_spare(self) -> None:
        started = _Started(self._address, self._authkey)
        with self._lock:
            keep = self._spare is None and not self._closed
            if keep:
                self._spare = started
        if not keep:
            started.stop()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.stop()


def export_in_process(store: Store, query_workers: int) -> bool:
    """Whether exports from ``store`` run in a process of their own (see the module doc)."""
    return store.read_address is not None and query_workers > 0
