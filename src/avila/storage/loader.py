"""The loader: moves ingest-log frames into the store in large transactions, exactly once.

Runs beside the DuckDB connection (in the store process for the server, in a thread for CLI
tools). Each round reads the frames between the store's recorded log position and the newest
durable position (at most ``max_bytes``), builds one Arrow table per destination table and
commits them together with the new log position in one transaction
(:meth:`~avila.storage.duckdb.store.DuckDBStore.commit_log_batch`). A crash before the commit
loads the frames again next time; after it, the position skips them: exactly once. Segments
wholly below the position are then deleted; a crash before that deletion is harmless for the
same reason. A failing commit (store disk full, say) is retried with backoff and never skipped:
the backlog grows and ingest answers 503 at its limit.

A round starts as soon as a durable position arrives, but at most one round starts per
:data:`ROUND_INTERVAL_S`: at a trickle of single events each round would otherwise be a
transaction (and a WAL fsync) of a row or two, and those small rounds cost the store process
about as much CPU as the server spends answering the requests (benchmarks/RESULTS.md; a round
has a fixed cost of several milliseconds of CPU in DuckDB's client whatever its size, and
100 ms rounds measured 25-40 % less store CPU per single-event request than 50 ms ones). Under
load rounds take longer than the interval and grow by themselves.

A round smaller than :data:`LINGER_BYTES` of log waits for more, up to :data:`LINGER_S` after
the previous round's start (a "linger", as Kafka producers batch): at 1,000 single-event
requests/s that makes rounds of ~500 events instead of ~100, and each round's commit (a WAL
fsync, the transaction's fixed CPU) competes less with the acknowledgements' own fsyncs and
CPU (single-event p99 6.5 -> 4.6 ms, RESULTS.md). Under full load rounds are larger than that
and start every :data:`ROUND_INTERVAL_S`, so the load lag stays short there. A reader that has
to wait for its own write (:meth:`LoadProgress.barrier`) ends the linger (:meth:`Loader.flush`):
read-your-writes never waits the linger out. So an acknowledged event is in the store within
about 0.5 s at a trickle, and at once after an idle spell.

A backlog (a restart's replay, a burst after a stall) loads in catch-up rounds of up to
:attr:`Loader.catch_up_rows`, which DuckDB writes more cheaply; a round that large goes into its
transaction in pieces of :data:`PIECE_ROWS` as they are read
(:meth:`~avila.storage.duckdb.store.DuckDBStore.open_log_round`), still all or nothing with its
log position.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from avila.storage import frames, rollups
from avila.storage.ingest_log import read_frames, segment_bases, segment_path
from avila.storage.load_rounds import ABANDON, OneBatch, Prepared, Round
from avila.storage.schema import columns_to_arrow

if TYPE_CHECKING:
    from avila.storage.base import Store

log = logging.getLogger("avila.ingest.loader")

MESSAGE_SCHEMA = pa.schema(
    [("project_id", pa.string()), ("message_id", pa.string()), ("received_at", pa.timestamp("us"))]
)

Report = Callable[[int, int, float], None]

#: the least time between the starts of two rounds (see the module docstring)
ROUND_INTERVAL_S = 0.1
#: how long a small round may wait for more (see the module docstring)
LINGER_S = 0.5
#: a round this large (log bytes) starts without lingering
LINGER_BYTES = 256 << 10
#: the most bytes of log a catch-up round reads (see :attr:`Loader.catch_up_rows`)
CATCH_UP_BYTES = 256 << 20
#: a round's events are turned into Arrow this many rows at a time
ARROW_CHUNK_ROWS = 16_384
#: Memory of the loader's Arrow tables. mimalloc, pyarrow's default, gives a finished round's
#: pages back to the system and faults fresh ones in for the next: measured +1 us of system
#: time per event in catch-up rounds (-0.1 to -0.3 us in ordinary ones) against glibc's malloc.
ARROW_POOL = pa.system_memory_pool()


#: Rounds larger than this go into their transaction in pieces of about this many rows, each
#: as soon as it is read: the commit thread appends one while the read thread decodes the next
#: (a catch-up round read whole before its commit began left the two threads taking turns).
PIECE_ROWS = 32_768


def identity_links(columns: dict[str, list[Any]]) -> pa.Table | None:
    """The identity links carried by one entry's events (see :mod:`avila.identity`)."""
    if "custom" not in columns["event_type"]:
        return None
    from avila.identity import links_from_rows
    from avila.ingest.validation import EventRows

    received = datetime(1970, 1, 1) + timedelta(microseconds=columns["received_at"][0])
    return links_from_rows(EventRows(columns["project_id"][0], received, columns))


@functools.cache
def _link_names() -> frozenset[bytes]:
    """The event names of identity links, as :func:`frames.decode_event_values` gives them."""
    from avila.identity import LINK_EVENTS

    return frozenset(name.encode() for name in LINK_EVENTS)


class Loader:
    """Two threads in a pipeline: one reads and decodes the next round or piece (Python work,
    holds the GIL) while the other commits the previous one (DuckDB work, releases it). Measured: the
    two halves cost about the same, so the pipeline nearly doubles rows/s (RESULTS.md)."""

    def __init__(
        self,
        store: Store,
        directory: Path,
        report: Report,
        *,
        max_bytes: int = 48 << 20,
        max_rows: int = 25_000,
        round_interval: float = ROUND_INTERVAL_S,
        linger: float = LINGER_S,
        linger_bytes: int = LINGER_BYTES,
        catch_up_rows: int | None = None,
    ) -> None:
        self.store = store
        self.directory = Path(directory)
        self.report = report
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        #: A round may grow to this many rows when the backlog holds at least half as many (a
        #: restart's replay, a burst after a stall); 0: never. The backend says what pays:
        #: DuckDB writes a large transaction's row groups straight into the database file,
        #: compressed, instead of into the WAL now and again at the next checkpoint (store CPU
        #: per row about -25 % counting that checkpoint, RESULTS.md). Ordinary rounds stay at
        #: ``max_rows``, so the lag from a 202 to loaded stays short while the loader keeps up.
        self.catch_up_rows = (
            getattr(store, "catch_up_load_rows", 0) if catch_up_rows is None else catch_up_rows
        )
        # A backend may need fewer, larger rounds (ClickHouse: every insert is a part).
        self.round_interval = max(round_interval, store.min_load_round_s)
        self.linger = max(linger, self.round_interval)
        self.linger_bytes = linger_bytes
        self._flush = False  # a reader waits for its write: end the linger
        self.position = store.log_position()
        # A round that may be partly stored (a backend without transactions crashed inside it)
        # is replayed first with exactly its old end: the same blocks, the same dedup tokens.
        self._replay_end = store.pending_log_round()
        self._prepared_to = self.position
        self._target = self.position
        self._cond = threading.Condition()
        self._stopping = False
        self._idle = False  # the reader waits for a durable position beyond what it read
        self._ready: queue.Queue[Prepared] = queue.Queue(maxsize=1)
        #: pieces of a large round go in as they are read, if the store takes rounds piecewise
        self.piece_rows = PIECE_ROWS if hasattr(store, "open_log_round") else None
        self._threads: list[threading.Thread] = []
        self.failures = 0

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._prepare_forever, name="ingest-loader-read", daemon=True),
            threading.Thread(target=self._commit_forever, name="ingest-loader-commit", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def notify(self, durable: int) -> None:
        with self._cond:
            if durable > self._target:
                self._target = durable
                # Only a reader with nothing to do needs waking: at a trickle of single events
                # a position arrives per request, and each wake-up costs the process a thread
                # switch (the reader pausing between rounds takes the newest target anyway).
                if self._idle:
                    self._cond.notify_all()

    def flush(self) -> None:
        """End the current linger: a reader waits for what is durable (still at most one round
        per :attr:`round_interval`)."""
        with self._cond:
            self._flush = True
            self._cond.notify_all()

    def _linger(self, last_start: float) -> None:
        """Wait (holding ``_cond``) for the next round's start: at least ``round_interval``
        after the last one, and up to ``linger`` while the pending log is small."""
        resume = last_start + self.round_interval
        end = last_start + self.linger
        while not self._stopping:
            while not self._stopping and (pause := resume - time.monotonic()) > 0:
                self._cond.wait(pause)
                if self._flush and resume > last_start + self.round_interval:
                    return
            if self._flush or resume >= end:
                return
            if self._target - self._prepared_to >= self.linger_bytes:
                return
            resume = min(resume + self.round_interval, end)

    def stop(self) -> None:
        """Finish the round being committed and stop (what is not loaded stays in the log)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _prepare_forever(self) -> None:
        delay = 0.05
        last_start = 0.0
        behind = False  # the last round stopped at its size limit, short of the target
        while True:
            with self._cond:
                self._idle = True
                while self._target <= self._prepared_to and not self._stopping:
                    self._cond.wait()
                self._idle = False
                # more frames gather meanwhile; a backlog beyond one round loads at once
                if not behind:
                    self._linger(last_start)
                if self._stopping:
                    return
                self._flush = False
                target = self._target
            last_start = time.monotonic()
            sent = False  # pieces of this round handed to the commit thread
            try:
                for piece in self.pieces(self._prepared_to, target, self.piece_rows):
                    if not self._put(piece):
                        return
                    sent = True
                delay = 0.05
            except Exception as exc:
                self.failures += 1
                log.error(
                    "ingest loader could not read the log; retrying", extra={"error": str(exc)}
                )
                if sent and not self._put(ABANDON):
                    return
                with self._cond:
                    self._cond.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._prepared_to = piece.end
            behind = piece.end < target

    def _put(self, item: Prepared) -> bool:
        while True:
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._stopping:
                    return False

    def _commit_forever(self) -> None:
        pieces: list[Prepared] = []  # of the round in progress
        transaction: Round | None = None
        spent = 0.0  # seconds this thread spent on the round
        while True:
            try:
                piece = self._ready.get(timeout=0.1)
            except queue.Empty:
                if self._stopping:
                    if transaction is not None:
                        transaction.abort()  # an unfinished round stays in the log
                    return
                continue
            if piece is ABANDON:
                if transaction is not None:
                    transaction.abort()
                transaction, pieces, spent = None, [], 0.0
                continue
            pieces.append(piece)
            delay = 0.05
            while True:
                started = time.perf_counter()
                try:
                    # after a failure the round starts again with every piece it has had
                    transaction = self._add(transaction, pieces if transaction is None else [piece])
                    spent += time.perf_counter() - started
                    if piece.final:
                        assert transaction is not None
                        self._finish(transaction, pieces, spent)
                        transaction, pieces, spent = None, [], 0.0
                    break
                except Exception as exc:  # retried, never skipped
                    if transaction is not None:
                        transaction.abort()
                        transaction = None
                    self.failures += 1
                    log.error("ingest loader commit failed; retrying", extra={"error": str(exc)})
                    if self._stopping:
                        return
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)

    def _add(self, transaction: Round | None, pieces: list[Prepared]) -> Round:
        """Add ``pieces`` to the round's transaction (opened first if ``None``)."""
        if transaction is None:
            opener = getattr(self.store, "open_log_round", None)
            transaction = OneBatch(self.store) if opener is None else opener(pieces[0].start)
        try:
            for piece in pieces:
                transaction.add(piece.events, piece.devices, piece.tables)
        except BaseException:
            transaction.abort()
            raise
        return transaction

    def _finish(self, transaction: Round, pieces: list[Prepared], spent: float) -> None:
        started = time.perf_counter()
        end = pieces[-1].end
        try:
            transaction.commit(end)
        except BaseException:
            transaction.abort()
            raise
        self.position = end
        # rows/s of the round: its read and its commit, as if they had run one after the other
        seconds = sum(p.seconds for p in pieces) + spent + time.perf_counter() - started
        self.report(end, sum(p.rows for p in pieces), seconds)
        self.trim()

    def load_once(self, target: int) -> int:
        """Read and commit one round up to ``target`` in this thread; returns the rows."""
        prepared = self.prepare(self.position, target)
        self.commit(prepared)
        return prepared.rows

    def prepare(self, start: int, target: int) -> Prepared:
        """Read one round from ``start`` up to ``target`` (bounded by max_rows / max_bytes)."""
        (prepared,) = self.pieces(start, target)
        return prepared

    def pieces(self, start: int, target: int, piece_rows: int | None = None) -> Iterator[Prepared]:
        """Read one round from ``start`` up to ``target`` (bounded by max_rows / max_bytes, or
        by the catch-up limits), in pieces of about ``piece_rows`` rows (default: whole)."""
        started = time.perf_counter()
        replay = start < self._replay_end
        if replay:
            target = self._replay_end
        event_batches: list[dict[str, list[Any]]] = []
        event_tables: list[pa.Table] = []
        batched = 0  # rows in event_batches
        readings: list[pa.Table] = []
        devices: list[pa.Table] = []
        messages: dict[str, list[Any]] = {"project_id": [], "message_id": [], "received_at": []}
        links: list[pa.Table] = []
        end = start
        rows = 0
        in_piece = 0  # rows since the last piece
        catching_up = False
        max_bytes = None if replay else max(self.max_bytes, CATCH_UP_BYTES)
        for frame_end, payload in read_frames(self.directory, start, target, max_bytes):
            kind = frames.kind(payload)
            if kind == frames.EVENTS:
                columns = frames.decode_event_values(memoryview(payload))
                event_batches.append(columns)
                batched += len(columns["event_id"])
                if batched >= ARROW_CHUNK_ROWS:
                    # Python lists of a whole catch-up round would hold ~2 KB per event; Arrow
                    # holds the values in place and the fresh memory is reused.
                    event_tables.append(columns_to_arrow(event_batches, ARROW_POOL))
                    event_batches, batched = [], 0
                rows += len(columns["event_id"])
                if not _link_names().isdisjoint(columns["event_name"]):
                    found = identity_links(frames.decode_events(memoryview(payload)))
                    if found is not None:
                        links.append(found)
            elif kind == frames.TELEMETRY:
                entry = frames.decode_telemetry(memoryview(payload))
                readings.append(entry.readings)
                rows += entry.readings.num_rows
                if entry.devices is not None:
                    devices.append(entry.devices)
                if entry.message is not None:
                    messages["project_id"].append(entry.message[0])
                    messages["message_id"].append(entry.message[1])
                    received = entry.readings.column("received_at")
                    messages["received_at"].append(received[0].value if len(received) else 0)
            else:
                log.error("ingest log: unknown entry kind skipped", extra={"kind": kind})
            end = frame_end
            if not replay:
                if catching_up:
                    if rows >= self.catch_up_rows:
                        break
                elif rows >= self.max_rows or end - start >= self.max_bytes:
                    # Grow into a catch-up round only if the backlog (estimated by this round's
                    # bytes per row) fills at least half of one: one of DuckDB's row groups.
                    backlog_rows = (target - start) * rows / (end - start)
                    if rows >= self.catch_up_rows or 2 * backlog_rows < self.catch_up_rows:
                        break
                    catching_up = True
            if piece_rows is not None and rows - in_piece >= piece_rows and end < target:
                # (a piece that ends the round is its final piece, below)
                yield self._piece(
                    start, end, rows - in_piece, event_tables, event_batches, links, readings,
                    devices, messages, started, final=False,
                )  # fmt: skip
                event_tables, event_batches, batched = [], [], 0
                links, readings, devices = [], [], []
                messages = {"project_id": [], "message_id": [], "received_at": []}
                in_piece, started = rows, time.perf_counter()
        if end == start:
            # Nothing readable although the log says it is durable: its segment is gone (deleted
            # by hand). Skip to the target rather than stall forever; say so loudly.
            log.error(
                "ingest log: durable range unreadable; skipped", extra={"from": start, "to": target}
            )
            end = target
        yield self._piece(
            start, end, rows - in_piece, event_tables, event_batches, links, readings, devices,
            messages, started, final=True,
        )  # fmt: skip

    def _piece(
        self,
        start: int,
        end: int,
        rows: int,
        event_tables: list[pa.Table],
        event_batches: list[dict[str, list[Any]]],
        links: list[pa.Table],
        readings: list[pa.Table],
        devices: list[pa.Table],
        messages: dict[str, list[Any]],
        started: float,
        *,
        final: bool,
    ) -> Prepared:
        tables: list[tuple[str, pa.Table]] = []
        if links:
            # Identity links ($identify / $alias events) go in with their events: a read that
            # sees the events sees the stitching too.
            tables.append(("identities", pa.concat_tables(links)))
        if readings:
            tables.append(
                ("telemetry", pa.concat_tables(readings) if len(readings) > 1 else readings[0])
            )
        if messages["message_id"]:
            tables.append(
                (
                    "telemetry_messages",
                    pa.Table.from_arrays(
                        [
                            pa.array(messages["project_id"], pa.string()),
                            pa.array(messages["message_id"], pa.string()),
                            pa.array(messages["received_at"], pa.int64()).cast(pa.timestamp("us")),
                        ],
                        schema=MESSAGE_SCHEMA,
                    ),
                )
            )
        if event_batches:
            event_tables.append(columns_to_arrow(event_batches, ARROW_POOL))
        events = None
        if event_tables:
            events = event_tables[0] if len(event_tables) == 1 else pa.concat_tables(event_tables)
        if events is not None and self.store.has_rollups:
            # The rollups' aggregation here, beside the next round's commit, not inside it.
            found = rollups.partials(events)
            if found is not None:
                tables.extend(zip(rollups.TABLES, found, strict=True))
        return Prepared(
            end,
            rows,
            events,
            pa.concat_tables(devices) if devices else None,
            tables,
            time.perf_counter() - started,
            start,
            final,
        )

    def commit(self, prepared: Prepared) -> None:
        """Commit one whole round (from :meth:`prepare`) in this thread."""
        started = time.perf_counter()
        transaction = self._add(None, [prepared])
        self._finish(transaction, [prepared], time.perf_counter() - started)

    def trim(self) -> None:
        """Delete segments whose every frame is loaded (the newest is never deleted: the log
        may still be appending to it)."""
        bases = segment_bases(self.directory)
        for base, following in zip(bases, bases[1:], strict=False):
            if following > self.position:
                break
            with suppress(FileNotFoundError):
                os.unlink(segment_path(self.directory, base))
