"""Exports encoded in a process of their own, away from the server's event loop.

Why (benchmarks/RESULTS.md, "Ingest while an export streams"): an export encoded in the server
process holds the interpreter's lock beside the event loop that acknowledges ingest. On the
100 M-event store a JSON export (msgspec over Python rows) took single-event ingest from p50
1.4 / p99 11 ms to p50 24 / p99 88 ms; CSV (pyarrow, which lets go of the lock) to 3.7 / 23.

How: :class:`ExportProcess` starts a fresh process (at the query workers' niceness,
:data:`avila.analytics.workers.NICE`) that opens read channels to the store process itself
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
from collections.abc import Iterator
from multiprocessing.connection import Connection

from avila.errors import StorageUnavailable
from avila.export.query import ExportRequest
from avila.export.writers import FORMATS, ExportFormat
from avila.storage.base import Store


def _export_main(
    address: str, authkey: bytes, project_id: str, request: ExportRequest, out: Connection
) -> None:
    """The export process: ``("ok", None)`` (or ``("err", exc)``), then the chunks as bytes,
    then ``b""``."""
    from avila.analytics.workers import NICE
    from avila.export.stream import open_export
    from avila.storage.duckdb.channels import RemoteReader

    os.nice(NICE)
    try:
        store = RemoteReader(address, authkey, channels=1)
        stream = open_export(store, project_id, request)
        chunk = next(stream, None)
    except Exception as exc:
        out.send(("err", exc))
        return
    out.send(("ok", None))
    try:
        while chunk is not None:
            if chunk:
                out.send_bytes(chunk)
            chunk = next(stream, None)
        out.send_bytes(b"")
    except OSError:  # the server stopped reading: it is about to kill this process
        pass
    finally:
        stream.close()
        store.close()


class ExportProcess(Iterator[bytes]):
    """Byte chunks of one export made by a process of its own (see the module doc); the same
    use as :class:`~avila.export.stream.ExportStream`. Blocking: call from a worker thread."""

    def __init__(self, store: Store, project_id: str, request: ExportRequest) -> None:
        assert store.read_address is not None
        address, authkey = store.read_address
        self.format: ExportFormat = FORMATS[request.format]
        ctx = multiprocessing.get_context("spawn")
        self._chunks, child = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_export_main,
            args=(address, authkey, project_id, request, child),
            name="avila-export",
            daemon=True,
        )
        self._process.start()
        child.close()
        try:
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
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5)
        self._chunks.close()


def export_in_process(store: Store, query_workers: int) -> bool:
    """Whether exports from ``store`` run in a process of their own (see the module doc)."""
    return store.read_address is not None and query_workers > 0
