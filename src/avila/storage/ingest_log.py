"""The ingest log: what a 202 waits for.

Every accepted write is appended here as one frame and acknowledged once a group ``fdatasync``
covered it; a loader (:mod:`avila.storage.loader`) moves frames into the store later, in large
transactions. Why our own file format rather than SQLite in WAL mode: both were measured side by
side (``benchmarks/bench_log.py``, benchmarks/RESULTS.md) and the plain file was clearly faster
per acknowledged byte; the format is small (below) and its recovery rule is one sentence.

Layout: a directory of segment files named by the log position of their first byte
(``00000000000000000000.seg``); a position is a byte offset in the log as if all segments were
one file, so positions only grow, across segments and restarts. A frame is ``<u32 length><u32
crc32 of payload>`` followed by the payload (:mod:`avila.storage.frames`). A segment is read from
its start to the first frame that is incomplete or fails its checksum (a torn tail: it was never
acknowledged, because an acknowledgement waits for an fsync that covers every earlier byte), or
to the next segment's base.

Writes: requests queue payloads from the event loop; one writer thread takes everything queued,
writes it with one ``writev`` and one ``fdatasync``, then resolves the requests' futures (group
commit: under load groups grow by themselves, at low load nothing waits for a timer). A failed
write or sync (ENOSPC, EIO) truncates the segment back to its last synced byte and fails that
group only; the next group starts a new segment, so ingest recovers by itself when space returns.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avila.errors import BacklogFull, IngestLogUnavailable, ShuttingDown
from avila.storage import frames
from avila.storage.load_progress import LoadProgress
from avila.storage.log_segments import HEADER, read_frames, segment_bases, segment_path

log = logging.getLogger("avila.ingest.log")

#: writev takes at most IOV_MAX (1024 on Linux) buffers.
_IOV_MAX = 1024


@dataclass(frozen=True)
class IngestLogConfig:
    directory: Path
    #: refuse new writes (503) when this many unloaded bytes are in the log
    max_backlog_bytes: int = 2 << 30
    #: ... or when the oldest unloaded entry is this old (the loader is this far behind)
    max_backlog_seconds: float = 60.0
    segment_bytes: int = 64 << 20
    #: the most rows one loader transaction takes
    max_load_rows: int = 25_000


def default_log_dir(store_path: Path) -> Path:
    """The log beside the DuckDB file it feeds: ``data/avila.duckdb`` -> ``data/avila.ingest-log``."""
    return store_path.with_name(store_path.stem + ".ingest-log")


def config_from_settings(settings: Any) -> IngestLogConfig:
    """The log the server uses for ``settings`` (:class:`avila.config.Settings`): every tool
    that writes to the store must use the same one (the store records one log position)."""
    return IngestLogConfig(
        settings.ingest_log_dir or default_log_dir(settings.duckdb_path),
        max_backlog_bytes=settings.ingest_backlog_max_bytes,
        max_backlog_seconds=settings.ingest_backlog_max_seconds,
        max_load_rows=settings.flush_max_events,
    )


@dataclass
class Recovery:
    """What the unloaded part of the log held at start (for rebuilding dedup indexes)."""

    start: int = 0
    end: int = 0
    frames: int = 0
    event_keys: list[tuple[str, str]] = field(default_factory=list)
    telemetry_messages: list[tuple[str, str]] = field(default_factory=list)
    torn_bytes: int = 0


_Pending = tuple[bytes, int, asyncio.AbstractEventLoop, "asyncio.Future[int]"]


class IngestLog:
    def __init__(
        self,
        config: IngestLogConfig,
        progress: LoadProgress,
        on_durable: Callable[[int], None],
    ) -> None:
        self.config = config
        self.directory = config.directory
        self.progress = progress
        self.on_durable = on_durable
        self.on_group: Callable[[int, int, float], None] | None = None
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._base = 0
        self._size = 0  # synced bytes of the current segment
        self._needs_roll = False
        self.last_error: str | None = None
        self.failed_appends = 0
        # (end position, monotonic time, events) of frames not yet loaded, oldest first
        self._unloaded: collections.deque[tuple[int, float, int]] = collections.deque()
        self._unloaded_events = 0
        self._unloaded_lock = threading.Lock()
        # seconds from acknowledgement to loaded, of the most recent entries (visibility lag)
        self._load_lags: collections.deque[float] = collections.deque(maxlen=20_000)
        progress.on_loaded(self._forget_loaded)

    # -- start -------------------------------------------------------------------------------

    def recover(self, loaded: int) -> Recovery:
        """Scan what is not loaded yet, drop a torn tail, delete loaded segments, open a new
        segment at the end. Call before :meth:`start`, while the loader is paused."""
        self.directory.mkdir(parents=True, exist_ok=True)
        bases = segment_bases(self.directory)
        recovery = Recovery(start=loaded, end=loaded)
        for i, base in enumerate(bases):
            following = bases[i + 1] if i + 1 < len(bases) else None
            if following is not None and following <= loaded:
                segment_path(self.directory, base).unlink(missing_ok=True)
        end = loaded
        now = time.monotonic()
        for frame_end, payload in read_frames(self.directory, loaded):
            recovery.frames += 1
            kind = frames.kind(payload)
            events = 0
            try:
                if kind == frames.EVENTS:
                    keys = list(frames.event_keys(payload))
                    events = len(keys)
                    recovery.event_keys.extend(keys)
                elif kind == frames.TELEMETRY:
                    entry = frames.decode_telemetry(payload, tables=False)
                    if entry.message:
                        recovery.telemetry_messages.append(entry.message)
                    events = 1
            except Exception as exc:  # the loader sets it aside (avila.storage.quarantine)
                log.error(
                    "ingest log: an unreadable entry", extra={"end": frame_end, "error": str(exc)}
                )
            self._unloaded.append((frame_end, now, events))
            self._unloaded_events += events
            end = frame_end
        # Bytes past the last valid frame of the last segment were never acknowledged.
        bases = segment_bases(self.directory)
        if bases and bases[-1] <= end:
            last = segment_path(self.directory, bases[-1])
            size = last.stat().st_size
            keep = end - bases[-1]
            if size > keep:
                recovery.torn_bytes = size - keep
                log.warning(
                    "ingest log: dropped a torn tail",
                    extra={"segment": last.name, "bytes": size - keep},
                )
                with open(last, "r+b") as f:
                    f.truncate(keep)
                    os.fsync(f.fileno())
        elif bases and end < bases[-1]:
            end = max(end, bases[-1])  # an empty newest segment (from a failed roll)
        recovery.end = end
        self._open_segment(end)
        self.progress.set_durable(end)
        return recovery

    def start(self) -> None:
        self._thread = threading.Thread(target=self._write_forever, name="ingest-log", daemon=True)
        self._thread.start()

    # -- appends -----------------------------------------------------------------------------

    def check_backlog(self) -> None:
        """Raise :class:`BacklogFull` when the loader is too far behind."""
        cfg = self.config
        backlog = self.progress.durable - self.progress.loaded
        age = self.oldest_unloaded_age()
        if backlog >= cfg.max_backlog_bytes or age >= cfg.max_backlog_seconds:
            rate = self.progress.rows_per_s or 1.0
            wait = max(1, min(60, int(self._unloaded_events / rate / 4) or 1))
            raise BacklogFull(
                f"the ingest backlog is full ({backlog} bytes, oldest entry {age:.0f} s);"
                f" retry after {wait} s",
                headers={"Retry-After": str(wait)},
                details=[{"backlog_bytes": backlog, "oldest_age_s": round(age, 3)}],
            )

    def append(self, payload: bytes, events: int) -> asyncio.Future[int]:
        """Queue one entry; the future resolves with its end position once it is durable."""
        if self._closing or self._thread is None:
            raise ShuttingDown("the server is shutting down; retry shortly")
        self.check_backlog()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._cond:
            self._pending.append((payload, events, loop, future))
            if len(self._pending) == 1:
                self._cond.notify()
        return future

    # -- writer thread -----------------------------------------------------------------------

    def _write_forever(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            self._write_group(batch)

    def _write_group(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        buffers: list[bytes] = []
        for payload, _, _, _ in batch:
            buffers.append(HEADER.pack(len(payload), zlib.crc32(payload)))
            buffers.append(payload)
        size = sum(len(b) for b in buffers)
        error: OSError | None = None
        try:
            if self._needs_roll or (self._size and self._size + size > self.config.segment_bytes):
                self._roll()
            self._write_all(buffers, size)
            os.fdatasync(self._fd)
        except OSError as exc:
            error = exc
            self._undo()
        if error is None:
            self._size += size
            durable = self._base + self._size
            now = time.monotonic()
            with self._unloaded_lock:
                position = durable - size
                for payload, events, _, _ in batch:
                    position += HEADER.size + len(payload)
                    self._unloaded.append((position, now, events))
                    self._unloaded_events += events
            self.progress.set_durable(durable)
            self.on_durable(durable)
            self.last_error = None
            if self.on_group is not None:
                self.on_group(
                    sum(e for _, e, _, _ in batch), len(batch), time.perf_counter() - started
                )
        else:
            self.failed_appends += len(batch)
            self.last_error = f"{errno.errorcode.get(error.errno or 0, 'error')}: {error}"
            log.error("ingest log append failed", extra={"error": self.last_error})
            durable = -1
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[int]]] = {}
        for _, _, loop, future in batch:
            by_loop.setdefault(loop, []).append(future)
        for loop, futures in by_loop.items():
            with suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, futures, durable, error)

    def _write_all(self, buffers: list[bytes], size: int) -> None:
        written = 0
        while written < size:
            # The common case is one call; a short write continues from where it stopped.
            views: list[bytes | memoryview] = []
            skip = written
            for buf in buffers:
                if skip >= len(buf):
                    skip -= len(buf)
                    continue
                views.append(memoryview(buf)[skip:] if skip else buf)
                skip = 0
                if len(views) == _IOV_MAX:
                    break
            n = os.pwritev(self._fd, views, self._size + written)
            if n == 0:
                raise OSError(errno.EIO, "write returned 0")
            written += n

    def _undo(self) -> None:
        """After a failed write or sync: cut the segment back to its synced bytes and continue
        in a new segment (a sync error may have left the file's pages in an unknown state)."""
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError:
            pass
        self._needs_roll = True

    def _roll(self) -> None:
        base = self._base + self._size
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._open_segment(base)
        self._needs_roll = False

    def _open_segment(self, base: int) -> None:
        path = segment_path(self.directory, base)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size:
                os.ftruncate(fd, 0)  # a leftover of a failed write at the same position
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._base, self._size = fd, base, 0

    # -- backlog -----------------------------------------------------------------------------

    def _forget_loaded(self, position: int) -> None:
        now = time.monotonic()
        with self._unloaded_lock:
            while self._unloaded and self._unloaded[0][0] <= position:
                _, acked_at, events = self._unloaded.popleft()
                self._unloaded_events -= events
                self._load_lags.append(now - acked_at)

    def load_lags(self, *qs: float) -> list[float | None]:
        """Quantiles ``qs`` of ack-to-loaded seconds over the most recent entries (the samples
        are copied under the lock acknowledgements also take, and sorted outside it)."""
        with self._unloaded_lock:
            samples = list(self._load_lags)
        lags = sorted(samples)
        return [lags[min(len(lags) - 1, int(q * len(lags)))] if lags else None for q in qs]

    @property
    def backlog_events(self) -> int:
        return self._unloaded_events

    def oldest_unloaded_age(self) -> float:
        with self._unloaded_lock:
            if not self._unloaded:
                return 0.0
            return time.monotonic() - self._unloaded[0][1]

    def backlog(self) -> dict[str, float | int | str | None]:
        progress = self.progress
        p50, p99 = self.load_lags(0.5, 0.99)
        return {
            "events": self._unloaded_events,
            "bytes": max(0, progress.durable - progress.loaded),
            "oldest_age_s": round(self.oldest_unloaded_age(), 3),
            "loader_rows_per_s": round(progress.rows_per_s, 1),
            "load_lag_p50_s": _round(p50),
            "load_lag_p99_s": _round(p99),
            "durable_position": progress.durable,
            "loaded_position": progress.loaded,
            "last_error": self.last_error,
            "quarantined": self.quarantined(),
        }

    def quarantined(self) -> int:
        """Entries the store refused for good, set aside (:mod:`avila.storage.quarantine`)."""
        from avila.storage import quarantine

        return quarantine.count(self.directory)

    # -- stop --------------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued, then stop the writer (loading continues elsewhere)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _settle(futures: list[asyncio.Future[int]], durable: int, error: OSError | None) -> None:
    if error is None:
        for future in futures:
            if not future.done():
                future.set_result(durable)
        return
    code = "disk_full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else None
    exc = IngestLogUnavailable(
        f"could not write the ingest log ({error.strerror or error}); nothing was acknowledged,"
        " retry shortly",
        code=code,
        headers={"Retry-After": "1"},
    )
    for future in futures:
        if not future.done():
            future.set_exception(exc)
