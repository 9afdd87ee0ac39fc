"""Run the DuckDB store in a child process and talk to it over pipes.

Why: DuckDB's Python binding takes the GIL several times per Arrow insert. In the server
process, where the event loop keeps the GIL busy with HTTP and validation, each group commit
waited for the GIL again and again (a 1,600-event insert went from ~9 ms alone to ~45 ms beside
a busy event loop). In its own process the writer has its own interpreter, so both cores do
useful work: the server validates events, the store process builds Arrow tables and commits.

DuckDB admits one process per database file, so reads go through the store process as well.
Channels (pipes), each served by a thread in the child:

- ``append``: column batches (msgpack) from the event loop's group commit, one at a time; the
  child builds the Arrow table, commits, and acknowledges after the commit. The socket
  buffers are widened so a whole batch fits (measured: +5-10 % events/s, benchmarks/RESULTS.md).
- ``write``: blocking writes (``execute``: deletes, migrations).
- a few ``read`` channels, so a long query never delays a commit.

The child exits when the parent's end of the ``write`` pipe closes, including when the parent
is killed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import os
import pickle
import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa

from avila.errors import StorageUnavailable
from avila.storage.base import Store
from avila.storage.schema import ColumnBatch, columns_to_arrow

log = logging.getLogger("avila.storage")

READ_CHANNELS = 4
_encode_batches = msgspec.msgpack.Encoder().encode
_decode_batches = msgspec.msgpack.Decoder(list[dict[str, list[Any]]]).decode


def to_ipc(table: pa.Table | pa.RecordBatch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)
    return sink.getvalue()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _widen_buffers(conn: Connection, size: int = 4 << 20) -> None:
    """Let a whole batch sit in the socket: with the default ~200 KB buffer a large frame
    ping-pongs between the two processes in small pieces. The kernel caps the size at
    net.core.wmem_max / rmem_max; a smaller cap only costs speed."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, size)
    finally:
        sock.close()


def _frame(payload: bytes) -> bytes:
    """The framing of multiprocessing.connection.Connection: 4-byte big-endian length."""
    return struct.pack("!i", len(payload)) + payload


# --- child side -------------------------------------------------------------------------------


def _serve_appends(store: Store, conn: Connection) -> None:
    """Commit each column batch from the group committer and acknowledge it after the commit.
    The committer keeps one batch in flight, gathering rows meanwhile, so batches arrive one at
    a time and already as large as the load makes them."""
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            store.append_events(columns_to_arrow(_decode_batches(data)))
            reply: tuple[Any, ...] = ("ok", None)
        except Exception as exc:  # the caller re-raises it
            reply = ("err", type(exc).__name__, str(exc))
        try:
            conn.send(reply)
        except OSError:
            return


def _serve_requests(store: Store, conn: Connection) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        op = message[0]
        try:
            if op == "query":
                conn.send(("ok", store.query(message[1], message[2])))
            elif op == "query_arrow":
                conn.send(("ipc", None))
                conn.send_bytes(to_ipc(store.query_arrow(message[1], message[2])))
            elif op == "query_batches":
                conn.send(("stream", None))
                for batch in store.query_batches(message[1], message[2], message[3]):
                    conn.send_bytes(to_ipc(batch))
                conn.send_bytes(b"")
            elif op == "append":
                store.append_events(from_ipc(conn.recv_bytes()))
                conn.send(("ok", None))
            elif op == "append_table":
                store.append_table(message[1], from_ipc(conn.recv_bytes()))
                conn.send(("ok", None))
            elif op == "execute":
                conn.send(("ok", store.execute(message[1], message[2])))
            elif op == "recent_keys":
                conn.send(("ok", list(store.recent_event_keys(message[1]))))
            elif op == "ping":
                store.ping()
                conn.send(("ok", None))
            else:
                conn.send(("err", "ValueError", f"unknown store operation {op!r}"))
        except Exception as exc:  # reported to the caller, who re-raises it
            try:
                conn.send(("err", type(exc).__name__, str(exc)))
            except OSError:
                return


def _child_main(
    path: str,
    threads: int | None,
    memory_limit: str,
    channels: list[Connection],
    ready: Connection,
) -> None:
    from avila.storage.duckdb.store import DuckDBStore

    try:
        store = DuckDBStore(Path(path), threads=threads, memory_limit=memory_limit)
    except Exception as exc:
        ready.send(("err", type(exc).__name__, str(exc)))
        return
    ready.send(("ok", None))
    write, append, *readers = channels
    _widen_buffers(append)
    threading.Thread(target=_serve_appends, args=(store, append), daemon=True).start()
    for conn in readers:
        threading.Thread(target=_serve_requests, args=(store, conn), daemon=True).start()
    writer = threading.Thread(target=_serve_requests, args=(store, write), daemon=True)
    writer.start()
    writer.join()
    store.close()
    # The other channel threads may sit inside DuckDB or a blocking read; interpreter
    # finalisation would tear them down mid-call. The store is closed: leave at once.
    os._exit(0)


# --- parent side ------------------------------------------------------------------------------


async def _write_all(loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        with suppress(BlockingIOError):
            view = view[os.write(fd, view) :]
        if view:
            ready = loop.create_future()
            loop.add_writer(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


async def _read_exactly(loop: asyncio.AbstractEventLoop, fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        try:
            chunk = os.read(fd, remaining)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            raise EOFError("store process closed the pipe")
        if chunk:
            chunks.append(chunk)
            remaining -= len(chunk)
            continue
        ready = loop.create_future()
        loop.add_reader(fd, ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
    return b"".join(chunks)


def _raise_remote(name: str, message: str) -> None:
    cls = getattr(duckdb, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        raise cls(message)
    raise StorageUnavailable(f"store error ({name}): {message}")


class ProcessStore(Store):
    """A :class:`Store` whose DuckDB lives in a child process."""

    backend = "duckdb"

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        memory_limit: str = "",
        start_timeout: float = 60,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        pairs = [ctx.Pipe(duplex=True) for _ in range(2 + READ_CHANNELS)]
        ready_parent, ready_child = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_child_main,
            args=(str(path), threads, memory_limit, [child for _, child in pairs], ready_child),
            name="avila-store",
            daemon=True,
        )
        deadline = time.monotonic() + start_timeout
        self._process.start()
        for _, child in pairs:
            child.close()
        ready_child.close()
        self._write = pairs[0][0]
        self._write_lock = threading.Lock()
        self._append = pairs[1][0]
        _widen_buffers(self._append)
        os.set_blocking(self._append.fileno(), False)
        self._append_lock: asyncio.Lock | None = None
        self._replies: collections.deque[asyncio.Future[tuple[Any, ...]]] = collections.deque()
        self._reply_reader: asyncio.Task[None] | None = None
        self._readers: queue.Queue[Connection] = queue.Queue()
        for parent, _ in pairs[2:]:
            self._readers.put(parent)
        while not ready_parent.poll(0.1):
            if not self._process.is_alive() or time.monotonic() > deadline:
                raise StorageUnavailable(f"store process did not start for {path}")
        try:
            status = ready_parent.recv()
        except EOFError:
            status = ("err", "StorageUnavailable", f"store process for {path} exited at start")
        if status[0] == "err":
            self._process.join(5)
            _raise_remote(status[1], status[2])
        self._closed = False

    # -- appends from the event loop -----------------------------------------------------------

    async def append_columns_async(self, batches: list[ColumnBatch]) -> None:
        """Send column batches (msgpack) to the store process; return after its commit.

        No thread is involved on this side: the event loop writes the frame and a reader task
        resolves replies in order, so nothing has to win the GIL back to finish a commit. The
        reader task (rather than reading in this coroutine) keeps the pipe in step even when a
        caller is cancelled while its commit is in flight.
        """
        loop = asyncio.get_running_loop()
        if self._closed:
            raise StorageUnavailable("store is closed")
        if self._append_lock is None:
            self._append_lock = asyncio.Lock()
        reply: asyncio.Future[tuple[Any, ...]] = loop.create_future()
        frame = _frame(_encode_batches(batches))
        async with self._append_lock:
            self._replies.append(reply)
            try:
                await _write_all(loop, self._append.fileno(), frame)
            except OSError as exc:
                self._fail_replies(exc)
        if self._reply_reader is None or self._reply_reader.done():
            self._reply_reader = loop.create_task(self._read_replies())
        result = await reply
        if result[0] == "err":
            _raise_remote(result[1], result[2])

    async def _read_replies(self) -> None:
        loop = asyncio.get_running_loop()
        fd = self._append.fileno()
        try:
            while self._replies:
                (size,) = struct.unpack("!i", await _read_exactly(loop, fd, 4))
                result = pickle.loads(await _read_exactly(loop, fd, size))
                future = self._replies.popleft()
                if not future.done():
                    future.set_result(result)
        except (OSError, EOFError) as exc:
            self._fail_replies(exc)

    def _fail_replies(self, exc: BaseException) -> None:
        error = StorageUnavailable(f"store process is not answering: {exc}")
        while self._replies:
            future = self._replies.popleft()
            if not future.done():
                future.set_exception(error)

    # -- blocking calls ----------------------------------------------------------------------

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
            _raise_remote(reply[1], reply[2])
        return tuple(reply)

    def append_events(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        with self._write_lock:
            try:
                self._write.send(("append",))
                self._write.send_bytes(to_ipc(table))
                reply = self._write.recv()
            except (EOFError, OSError) as exc:
                raise StorageUnavailable(f"store process is not answering: {exc}") from exc
        if reply[0] == "err":
            _raise_remote(reply[1], reply[2])

    def append_table(self, table_name: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        with self._write_lock:
            try:
                self._write.send(("append_table", table_name))
                self._write.send_bytes(to_ipc(table))
                reply = self._write.recv()
            except (EOFError, OSError) as exc:
                raise StorageUnavailable(f"store process is not answering: {exc}") from exc
        if reply[0] == "err":
            _raise_remote(reply[1], reply[2])

    def recent_event_keys(self, since: datetime) -> Iterator[tuple[str, str]]:
        with self._reader() as conn:
            keys = self._call(conn, "recent_keys", since)[1]
        return iter(keys)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._reader() as conn:
            return list(self._call(conn, "query", sql, list(params or []))[1])

    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        with self._reader() as conn:
            self._call(conn, "query_arrow", sql, list(params or []))
            return from_ipc(conn.recv_bytes())

    def query_batches(
        self, sql: str, params: Sequence[Any] | None = None, batch_rows: int = 65536
    ) -> Iterator[pa.RecordBatch]:
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
                # A consumer that stops early (a client leaving mid-export) must not hand the
                # channel back with frames still in it: read them to the end-of-stream marker.
                while not finished:
                    try:
                        finished = not conn.recv_bytes()
                    except (EOFError, OSError):
                        break

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        with self._write_lock:
            return int(self._call(self._write, "execute", sql, list(params or []))[1])

    def ping(self) -> None:
        if not self._process.is_alive():
            raise StorageUnavailable("store process has exited")
        with self._reader() as conn:
            self._call(conn, "ping")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            self._write.close()
        self._append.close()
        while not self._readers.empty():
            self._readers.get_nowait().close()
        self._process.join(30)
        if self._process.is_alive():
            log.error("store process did not exit; terminating it")
            self._process.terminate()
