"""Run the DuckDB store in a child process and talk to it over pipes.

Why: DuckDB's Python binding takes the GIL several times per Arrow insert. In the server
process, where the event loop keeps the GIL busy with HTTP and validation, each group commit
waited for the GIL again and again (a 1,600-event insert went from ~9 ms alone to ~45 ms beside
a busy event loop). In its own process the writer has its own interpreter, so both cores do
useful work: the server validates events, the store process builds Arrow tables and commits.

DuckDB admits one process per database file, so reads go through the store process as well.
Channels (pipes), each served by a thread in the child:

- ``log``: the ingest log's loader (:mod:`avila.storage.loader`) runs here, reading the log's
  segment files itself; the server only sends it durable log positions and receives loaded
  ones (the rows never cross the pipe).
- ``write``: blocking writes (``execute``: deletes, migrations).
- a few ``read`` channels, so a long query never delays a commit;
- a listener on a Linux abstract socket (a random name and key, both known only to the
  parent), through which query worker processes open read channels of their own
  (:class:`avila.storage.duckdb.channels.RemoteReader`).

The child exits when the parent's end of the ``write`` pipe closes, including when the parent
is killed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import secrets
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from multiprocessing import AuthenticationError
from multiprocessing.connection import (
    Connection,
    Listener,
    answer_challenge,
    deliver_challenge,
)
from pathlib import Path
from typing import Any

import pyarrow as pa

from avila.errors import StorageUnavailable
from avila.storage.base import Statement, Store
from avila.storage.duckdb.channels import ChannelReads, raise_remote, to_ipc
from avila.storage.frames import from_ipc
from avila.storage.ingest_log import IngestLogConfig, default_log_dir

log = logging.getLogger("avila.storage")

READ_CHANNELS = 4
#: How long a failed ping waits for the store process to be reaped before calling it hung.
EXIT_GRACE_S = 0.2

#: CPU niceness added to the store process's threads that run background work: DuckDB's own
#: worker threads and the threads serving query workers (whose Python side already runs at
#: this niceness, :mod:`avila.analytics.workers`). On two cores, a heavy report's DuckDB
#: threads at the server's priority took CPU from the event loop that acknowledges events;
#: below it, they still use every idle core.
BACKGROUND_NICE = 10


def _thread_ids() -> set[int]:
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:  # not Linux: no per-thread priorities to set
        return set()


def lower_priority(thread_ids: set[int]) -> None:
    """Add :data:`BACKGROUND_NICE` to each of these threads' niceness (Linux schedules threads
    one by one; ``os.nice`` would change only the calling thread as well)."""
    for tid in thread_ids:
        with suppress(OSError):  # the thread has exited meanwhile
            niceness = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, niceness + BACKGROUND_NICE))


# --- child side -------------------------------------------------------------------------------


def _serve_log(store: Any, conn: Connection, loaders: list[Any]) -> None:
    """The ingest log's channel: ``("attach", dir)`` starts the loader (paused until the first
    durable position) and answers the loaded position; ``("durable", position)`` lets it load up
    to there. The loader reports each committed round as ``("loaded", position, rows, s)``."""
    from avila.storage.loader import Loader

    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock, suppress(OSError):
            conn.send(message)

    def report(position: int, rows: int, seconds: float) -> None:
        send(("loaded", position, rows, seconds))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "durable" and loaders:
            loaders[0].notify(message[1])
        elif message[0] == "flush" and loaders:
            loaders[0].flush()
        elif message[0] == "attach":
            try:
                loader = Loader(store, Path(message[1]), report, max_rows=message[2])
                loader.start()
                loaders.append(loader)
                send(("attached", loader.position))
            except Exception as exc:
                send(("err", type(exc).__name__, str(exc)))


def _serve_requests(store: Store, conn: Connection) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        op = message[0]
        if op == "cancel":
            # A reader's cancel that arrived after its stream had ended: nothing left to stop.
            continue
        try:
            if op == "query":
                conn.send(("ok", store.query(message[1], message[2])))
            elif op == "query_arrow":
                # The query first: if it fails (a timeout, say), the caller gets ("err", ...)
                # instead of a header promising bytes that never come.
                result = to_ipc(store.query_arrow(message[1], message[2]))
                conn.send(("ipc", None))
                conn.send_bytes(result)
            elif op == "query_batches":
                conn.send(("stream", None))
                batches = store.query_batches(message[1], message[2], message[3])
                try:
                    for batch in batches:
                        if conn.poll():
                            # The reader stopped early (a client left mid-export) and sent
                            # ("cancel",), read as the next request: stop producing rows.
                            break
                        conn.send_bytes(to_ipc(batch))
                finally:
                    batches.close()
                conn.send_bytes(b"")
            elif op == "append":
                store.append_events(from_ipc(conn.recv_bytes()))
                conn.send(("ok", None))
            elif op == "append_table":
                store.append_table(message[1], from_ipc(conn.recv_bytes()))
                conn.send(("ok", None))
            elif op == "execute":
                conn.send(("ok", store.execute(message[1], message[2])))
            elif op == "execute_all":
                conn.send(("ok", store.execute_all(message[1])))
            elif op == "recent_keys":
                conn.send(("ok", list(store.recent_event_keys(message[1]))))
            elif op == "settle_sessions":
                store.settle_kept_sessions()
                conn.send(("ok", None))
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


def _serve_listener(store: Store, listener: Listener, authkey: bytes) -> None:
    """Read channels for other processes (query workers, :mod:`avila.analytics.workers`): each
    connection gets a thread of its own, which serves it once it has shown it knows the key.
    The key check runs in that thread, not here: a client that connects and never answers
    (anyone on the host can reach an abstract socket) must not hold up the next one."""
    while True:
        try:
            conn = listener.accept()
        except OSError:
            return
        threading.Thread(
            target=_serve_authenticated, args=(store, conn, authkey), daemon=True
        ).start()


def _serve_authenticated(store: Store, conn: Connection, authkey: bytes) -> None:
    try:
        deliver_challenge(conn, authkey)
        answer_challenge(conn, authkey)
    except (AuthenticationError, EOFError, OSError):
        conn.close()
        return
    lower_priority({threading.get_native_id()})
    _serve_requests(store, conn)


def _child_main(
    path: str,
    threads: int | None,
    memory_limit: str,
    channels: list[Connection],
    ready: Connection,
    query_timeout: float = 0,
    listen: tuple[str, bytes] | None = None,
) -> None:
    from avila.storage.duckdb.store import DuckDBStore

    try:
        before = _thread_ids()
        store = DuckDBStore(
            Path(path), threads=threads, memory_limit=memory_limit, query_timeout=query_timeout
        )
        lower_priority(_thread_ids() - before)  # DuckDB's worker threads
        # Listening before "ready": a worker may connect as soon as the parent has the store.
        listener = Listener(listen[0], family="AF_UNIX") if listen is not None else None
    except Exception as exc:
        ready.send(("err", type(exc).__name__, str(exc)))
        return
    write, log_channel, *readers = channels
    loaders: list[Any] = []
    threading.Thread(target=_serve_log, args=(store, log_channel, loaders), daemon=True).start()
    for conn in readers:
        threading.Thread(target=_serve_requests, args=(store, conn), daemon=True).start()
    if listener is not None and listen is not None:  # the key is checked per connection
        threading.Thread(
            target=_serve_listener, args=(store, listener, listen[1]), daemon=True
        ).start()
    ready.send(("ok", None))
    writer = threading.Thread(target=_serve_requests, args=(store, write), daemon=True)
    writer.start()
    writer.join()
    for loader in loaders:
        loader.stop()  # finishes the round in progress; the rest stays in the log
    store.close()
    # The other channel threads may sit inside DuckDB or a blocking read; interpreter
    # finalisation would tear them down mid-call. The store is closed: leave at once.
    os._exit(0)


# --- parent side ------------------------------------------------------------------------------


class ProcessStore(ChannelReads):
    """A :class:`Store` whose DuckDB lives in a child process."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        memory_limit: str = "",
        start_timeout: float = 60,
        query_timeout: float = 0,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        pairs = [ctx.Pipe(duplex=True) for _ in range(2 + READ_CHANNELS)]
        ready_parent, ready_child = ctx.Pipe(duplex=False)
        # Linux's abstract socket namespace: no file to clean up when the store process is killed
        self.read_address = ("\0avila-store-" + secrets.token_hex(12), secrets.token_bytes(32))
        self._process = ctx.Process(
            target=_child_main,
            args=(
                str(path),
                threads,
                memory_limit,
                [child for _, child in pairs],
                ready_child,
                query_timeout,
                self.read_address,
            ),
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
        self.path = Path(path)
        self.query_timeout = query_timeout
        self._log_channel = pairs[1][0]
        self._log_send_lock = threading.Lock()
        self._attached: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._log_reader: threading.Thread | None = None
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
            raise_remote(status[1], status[2])
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The store process's id."""
        return self._process.pid

    # -- the ingest log's loader (in the store process) ---------------------------------------

    def default_ingest_log_config(self) -> IngestLogConfig:
        return IngestLogConfig(default_log_dir(self.path))

    def _attach_loader(self, config: IngestLogConfig) -> int:
        self._log_reader = threading.Thread(
            target=self._read_log_channel, name="store-log-reader", daemon=True
        )
        self._log_reader.start()
        self.load_progress.on_wait(self._flush_loader)
        with self._log_send_lock:
            self._log_channel.send(("attach", str(config.directory), config.max_load_rows))
        try:
            reply = self._attached.get(timeout=60)
        except queue.Empty:
            raise StorageUnavailable("the store process did not attach the ingest log") from None
        if reply[0] == "err":
            raise_remote(reply[1], reply[2])
        return int(reply[1])

    def _read_log_channel(self) -> None:
        progress = self.load_progress
        while True:
            try:
                message = self._log_channel.recv()
            except (EOFError, OSError):
                self._attached.put(("err", "StorageUnavailable", "store process exited"))
                return
            if message[0] == "loaded":
                progress.set_loaded(message[1], message[2], message[3])
            else:
                self._attached.put(message)

    def _notify_durable(self, position: int) -> None:
        self._send_log(("durable", position))

    def _flush_loader(self) -> None:
        self._send_log(("flush",))

    def _send_log(self, message: tuple[Any, ...]) -> None:
        with self._log_send_lock:
            try:
                self._log_channel.send(message)
            except OSError as exc:
                log.error("store process is not answering", extra={"error": str(exc)})

    def _stop_loader(self) -> None:
        pass  # the store process stops its loader when the write channel closes

    # -- blocking calls ----------------------------------------------------------------------

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
            raise_remote(reply[1], reply[2])

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
            raise_remote(reply[1], reply[2])

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        with self._write_lock:
            return int(self._call(self._write, "execute", sql, list(params or []))[1])

    def execute_all(self, statements: Sequence[Statement]) -> list[int]:
        batch = [(sql, list(params)) for sql, params in statements]
        with self._write_lock:
            return list(self._call(self._write, "execute_all", batch)[1])

    def ping(self) -> None:
        if not self._process.is_alive():
            raise StorageUnavailable("store process has exited")
        try:
            self._ping_channel()
        except StorageUnavailable:
            # A killed process breaks its channels a moment before it can be reaped: say that
            # it exited (what an operator needs to know) rather than only "broken pipe".
            self._process.join(timeout=EXIT_GRACE_S)
            if not self._process.is_alive():
                raise StorageUnavailable("store process has exited") from None
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._close_ingest_log()
        self._closed = True
        with self._write_lock:
            self._write.close()
        while not self._readers.empty():
            self._readers.get_nowait().close()
        self._process.join(30)
        self._log_channel.close()
        if self._process.is_alive():
            log.error("store process did not exit; terminating it")
            self._process.terminate()
