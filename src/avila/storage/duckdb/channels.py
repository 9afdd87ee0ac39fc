"""The client side of the store process's read channels, and a read-only store made of them.

The store process (:mod:`avila.storage.duckdb.process`) answers requests on pipes, one request
at a time per pipe: ``(op, *args)`` in, ``("ok", value)`` / ``("ipc", None)`` + Arrow IPC bytes /
``("stream", None)`` + a stream of IPC frames ending with ``b""`` / ``("err", type, text)`` out.
:class:`ChannelReads` holds the reads of that protocol for any owner of such pipes: the server's
:class:`~avila.storage.duckdb.process.ProcessStore`, and :class:`RemoteReader`, which a query
worker process (:mod:`avila.analytics.workers`) opens by connecting to the store process's
listener, so an analytics query runs in neither the server's nor the store's interpreter.
"""

from __future__ import annotations

import queue
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from multiprocessing.connection import Client, Connection
from typing import Any

import duckdb
import pyarrow as pa

from avila.errors import QueryTimeout, StorageUnavailable
from avila.storage.duckdb.rows import DuckDBRows
from avila.storage.frames import from_ipc


def to_ipc(table: pa.Table | pa.RecordBatch) -> pa.Buffer:
    """The IPC stream of ``table``, without the copy into ``bytes`` of :func:`frames.to_ipc`."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)
    return sink.getvalue()


def raise_remote(name: str, message: str) -> None:
    """Re-raise an error the store process reported as ``("err", type name, text)``."""
    if name == QueryTimeout.__name__:
        raise QueryTimeout(message)
    cls = getattr(duckdb, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        raise cls(message)
    raise StorageUnavailable(f"store error ({name}): {message}")


class ChannelReads(DuckDBRows):
    """Reads over the store process's request channels (a pool: one request per channel at a
    time). Subclasses fill ``_readers`` and say what :meth:`read_barrier` waits for."""

    backend = "duckdb"
    _readers: queue.Queue[Connection]
    _closed: bool

    @contextmanager
    def _reader(self) -> Iterator[Connection]:
        if self._closed:
            raise StorageUnavailable("store is closed")
        conn = self._readers.get()
        try:
            yield conn
        finally:
            self._readers.put(conn)

    @staticmethod
    def _call(conn: Connection, *message: Any) -> tuple[Any, ...]:
        try:
            conn.send(message)
            reply = conn.recv()
        except (EOFError, OSError) as exc:
            raise StorageUnavailable(f"store process is not answering: {exc}") from exc
        if reply[0] == "err":
            raise_remote(reply[1], reply[2])
        return tuple(reply)

    def recent_event_keys(self, since: datetime) -> Iterator[tuple[str, str]]:
        with self._reader() as conn:
            keys = self._call(conn, "recent_keys", since)[1]
        return iter(keys)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        self.read_barrier()
        with self._reader() as conn:
            return list(self._call(conn, "query", sql, list(params or []))[1])

    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        self.read_barrier()
        with self._reader() as conn:
            self._call(conn, "query_arrow", sql, list(params or []))
            return from_ipc(conn.recv_bytes())

    def query_batches(
        self, sql: str, params: Sequence[Any] | None = None, batch_rows: int = 65536
    ) -> Generator[pa.RecordBatch, None, None]:
        self.read_barrier()
        with self._reader() as conn:
            self._call(conn, "query_batches", sql, list(params or []), batch_rows)
            finished = False
            try:
                while True:
                    data = conn.recv_bytes()
                    if not data:
                        finished = True
                        return
                    yield from from_ipc(data).to_batches()
            finally:
                # A consumer that stops early (a client leaving mid-export) tells the store
                # process to stop producing rows, and must not hand the channel back with
                # frames still in it: it reads them to the end-of-stream marker, which follows
                # within a batch or two instead of after the rest of the result.
                if not finished:
                    with suppress(OSError):
                        conn.send(("cancel",))
                while not finished:
                    try:
                        finished = not conn.recv_bytes()
                    except (EOFError, OSError):
                        break

    def settle_kept_sessions(self) -> None:
        # (a write the store process decides on, so a read-only reader may ask for it)
        with self._reader() as conn:
            self._call(conn, "settle_sessions")

    def _ping_channel(self) -> None:
        with self._reader() as conn:
            self._call(conn, "ping")


class RemoteReader(ChannelReads):
    """A read-only store in another process than the store process's parent: ``channels``
    connections to the store process's listener at ``address``. Reads do not wait for the
    ingest loader here: whoever sent the work waited (``read_barrier``) before sending it."""

    def __init__(
        self, address: str, authkey: bytes, *, channels: int = 2, query_timeout: float = 0
    ) -> None:
        self.query_timeout = query_timeout
        self._readers = queue.Queue()
        try:
            for _ in range(channels):
                self._readers.put(Client(address, family="AF_UNIX", authkey=authkey))
        except OSError as exc:
            raise StorageUnavailable(f"cannot reach the store process: {exc}") from exc
        self._closed = False

    def _read_only(self, what: str) -> StorageUnavailable:
        return StorageUnavailable(f"{what}: a query worker's store is read-only")

    def append_events(self, table: pa.Table) -> None:
        raise self._read_only("append_events")

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        raise self._read_only("execute")

    def ping(self) -> None:
        self._ping_channel()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while not self._readers.empty():
            self._readers.get_nowait().close()
