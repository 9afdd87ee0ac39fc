"""The loader: moves ingest-log frames into the store in large transactions, exactly once.

Runs beside the DuckDB connection (in the store process for the server, in a thread for CLI
tools). Each round reads the frames between the store's recorded log position and the newest
durable position (at most ``max_bytes``), builds one Arrow table per destination table and
commits them together with the new log position in one transaction
(:meth:`~avila.storage.duckdb.store.DuckDBStore.commit_log_batch`). A crash before the commit
loads the frames again next time; after it, the position skips them: exactly once. Segments
wholly below the position are then deleted; a crash before that deletion is harmless for the
same reason. A failing commit (store disk full, say) is retried with backoff and never skipped:
the backlog grows and ingest answers 503 at its limit. A round that fails
:data:`~avila.storage.quarantine.ROUND_TRIES` times in a row (to read or to commit) is loaded
entry by entry instead, and an entry the store refuses for good is set aside in the log
directory rather than stop loading for ever (:mod:`avila.storage.quarantine`). In a store
without round transactions (ClickHouse) only a round that provably stored nothing is split
(:meth:`Loader._may_split`); one that may be partly stored is retried whole.

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
CPU (single-event p99 6.5 -> 4.6 ms, RESULTS.md). The byte limit is 1 MB, not the 256 KB first
chosen: a single event's log entry is ~850 bytes, so 256 KB ended the linger after ~300 events
(rounds every ~0.3 s at 1,000 requests/s) and an A/B kept 1 MB (RESULTS.md, 2026-12-03).
Under full load rounds are larger than that and start every :data:`ROUND_INTERVAL_S`, so the
load lag stays short there. A reader that has
to wait for its own write (:meth:`LoadProgress.barrier`) ends the linger (:meth:`Loader.flush`):
read-your-writes never waits the linger out. So an acknowledged event is in the store within
about a second at a trickle, and at once after an idle spell. The linger is 1 s, not the 0.5 s
first chosen: at 1,000 requests/s rounds of ~1,000 events instead of ~500 gave a lower
single-event p99 in an A/B (7.12 -> 5.55 ms, batch and telemetry no lower, visibility no later;
RESULTS.md, 2026-12-05).

A backlog (a restart's replay, a burst after a stall) loads in catch-up rounds of up to
:attr:`Loader.catch_up_rows`, which DuckDB writes more cheaply; a round that large goes into its
transaction in pieces of :data:`PIECE_ROWS` as they are read
(:meth:`~avila.storage.duckdb.store.DuckDBStore.open_log_round`), still all or nothing with its
log position.

Small rounds leave their events' sessions to be cut later, in bulk
(:class:`avila.storage.session_table.Upkeep`). After :data:`IDLE_CUT_S` without a round the
loader cuts them, so the next sessions read does not have to.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from avila.storage import quarantine
from avila.storage.load_rounds import ABANDON, NothingStored, Prepared, Round
from avila.storage.round_commits import Report, RoundCommits
from avila.storage.round_reading import PIECE_ROWS, RoundReader

if TYPE_CHECKING:
    from avila.storage.base import Compacted, Store
log = logging.getLogger("avila.ingest.loader")

#: the least time between the starts of two rounds (see the module docstring)
ROUND_INTERVAL_S = 0.1
#: how long a small round may wait for more (see the module docstring)
LINGER_S = 1.0
#: a round this large (log bytes) starts without lingering
LINGER_BYTES = 1 << 20
#: after this long without a round, the sessions of waiting rows are cut
#: (avila.storage.session_table.Upkeep), so the next sessions read need not
IDLE_CUT_S = 1.0
#: how often the loader looks for rollup days to compact (avila.storage.rollups.compact) and
#: event days to order (avila.storage.event_order)
COMPACT_EVERY_S = 60.0


class Loader(RoundCommits):
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
        #: A round may grow to this many rows when the backlog holds at least half as many (a
        #: restart's replay, a burst after a stall); 0: never. The backend says what pays:
        #: DuckDB writes a large transaction's row groups straight into the database file,
        #: compressed, instead of into the WAL now and again at the next checkpoint (store CPU
        #: per row about -25 % counting that checkpoint, RESULTS.md). Ordinary rounds stay at
        #: ``max_rows``, so the lag from a 202 to loaded stays short while the loader keeps up.
        if catch_up_rows is None:
            catch_up_rows = getattr(store, "catch_up_load_rows", 0)
        # A backend may need fewer, larger rounds (ClickHouse: every insert is a part).
        self.round_interval = max(round_interval, store.min_load_round_s)
        self.linger = max(linger, self.round_interval)
        self.linger_bytes = linger_bytes
        self._flush = False  # a reader waits for its write: end the linger
        self.position = store.log_position()
        # A round that may be partly stored (a backend without transactions crashed inside it)
        # is replayed first with exactly its old end: the same blocks, the same dedup tokens.
        self._replay_end = store.pending_log_round()
        self.reader = RoundReader(
            store,
            self.directory,
            max_bytes=max_bytes,
            max_rows=max_rows,
            catch_up_rows=catch_up_rows,
            replay_end=self._replay_end,
        )
        self._prepared_to = self.position
        self._target = self.position
        self._cond = threading.Condition()
        self._stopping = False
        #: when each upkeep job (:meth:`_upkeep`) may next run
        self._next_upkeep = dict.fromkeys(
            ("compact", "order", "history"), time.monotonic() + COMPACT_EVERY_S
        )
        self._idle = False  # the reader waits for a durable position beyond what it read
        self._ready: queue.Queue[Prepared] = queue.Queue(maxsize=1)
        #: pieces of a large round go in as they are read, if the store takes rounds piecewise
        self._transactional = hasattr(store, "open_log_round")
        self.piece_rows = PIECE_ROWS if self._transactional else None
        self._threads: list[threading.Thread] = []
        self.failures = 0
        self.quarantined = 0  # entries set aside since start (avila.storage.quarantine)
        self._set_aside_at: collections.deque[float] = collections.deque()
        #: a round to load entry by entry, ``(start, end or None: as far as a round reads)``,
        #: asked of the read thread (the commit thread gives up on it whole)
        self._isolate: tuple[int, int | None] | None = None
        quarantine.settle(self.directory, self.position)

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
                if self._isolate is not None:
                    return
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
        failed_at, failed = -1, 0  # where reading last failed, how many times in a row
        while True:
            with self._cond:
                self._idle = True
                while (
                    self._target <= self._prepared_to
                    and not self._stopping
                    and self._isolate is None
                ):
                    self._cond.wait()
                self._idle = False
                # more frames gather meanwhile; a backlog beyond one round loads at once
                if not behind and self._isolate is None:
                    self._linger(last_start)
                if self._stopping:
                    return
                self._flush = False
                target = self._target
                isolate, self._isolate = self._isolate, None
            if isolate is not None:
                start, end = isolate
                if end is None:
                    try:
                        end = self.reader.round_end(start, target)
                    except Exception as exc:  # (a read error that lasts: retried)
                        log.error(
                            "ingest loader could not read the log; retrying",
                            extra={"error": str(exc)},
                        )
                        with self._cond:
                            if self._isolate is None:
                                self._isolate = isolate
                            self._cond.wait(delay)
                        delay = min(delay * 2, 5.0)
                        continue
                if not self._put(Prepared(end, 0, None, None, [], 0.0, start, isolate=True)):
                    if self._stopping:
                        return
                    continue  # asked again meanwhile (by the commit thread): that one counts
                self._prepared_to, behind = end, end < target
                continue
            last_start = time.monotonic()
            sent = False  # pieces of this round handed to the commit thread
            try:
                for piece in self.reader.pieces(self._prepared_to, target, self.piece_rows):
                    if not self._put(piece):
                        break
                    sent = True
                else:
                    delay = 0.05
                    self._prepared_to = piece.end
                    behind = piece.end < target
                    continue
                if self._stopping:
                    return
                # the commit thread gave this round up: it is loaded entry by entry (above)
            except Exception as exc:
                self.failures += 1
                log.error(
                    "ingest loader could not read the log; retrying", extra={"error": str(exc)}
                )
                if sent and not self._put(ABANDON) and self._stopping:
                    return
                failed = failed + 1 if failed_at == self._prepared_to else 1
                failed_at = self._prepared_to
                if failed >= quarantine.ROUND_TRIES and self._may_split(failed_at, reading=True):
                    with self._cond:
                        if self._isolate is None:  # (the commit thread's own request wins)
                            self._isolate = (failed_at, None)
                    continue
                with self._cond:
                    self._cond.wait(delay)
                delay = min(delay * 2, 5.0)

    def _put(self, item: Prepared) -> bool:
        while True:
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._stopping or self._isolate is not None:
                    return False

    def _commit_forever(self) -> None:
        pieces: list[Prepared] = []  # of the round in progress
        transaction: Round | None = None
        spent = 0.0  # seconds this thread spent on the round
        awaiting: int | None = None  # asked to load from here entry by entry: skip the rest
        quiet_since = time.monotonic()  # when the last piece came
        while True:
            try:
                piece = self._ready.get(timeout=0.1)
            except queue.Empty:
                if self._stopping:
                    if transaction is not None:
                        transaction.abort()  # an unfinished round stays in the log
                    return
                if transaction is None and time.monotonic() - quiet_since >= IDLE_CUT_S:
                    quiet_since = self._cut_sessions()
                    self._upkeep(idle=True)
                continue
            if transaction is None:  # between rounds: a busy store is kept up too, a little
                self._upkeep(idle=False)
            quiet_since = time.monotonic()
            if piece.isolate:
                if piece.start == self.position and awaiting in (None, piece.start):
                    awaiting = None
                    self._load_entry_by_entry(piece.start, piece.end)
                elif awaiting is None:
                    # (cannot happen: rounds reach this thread in log order) read again from
                    # what is loaded, rather than skip a range
                    awaiting = self._ask_isolation(self.position, None)
                continue
            if awaiting is not None:
                continue
            if piece is ABANDON:
                if transaction is not None:
                    transaction.abort()
                transaction, pieces, spent = None, [], 0.0
                continue
            pieces.append(piece)
            delay = 0.05
            tries = 0
            stored_nothing = True  # every try of this round provably stored nothing of it
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
                    tries += 1
                    stored_nothing = stored_nothing and isinstance(exc, NothingStored)
                    if tries >= quarantine.ROUND_TRIES and self._may_split(
                        pieces[0].start, reading=False, stored_nothing=stored_nothing
                    ):
                        # perhaps an entry the store can never take: load the round entry by
                        # entry
                        awaiting = self._ask_isolation(pieces[0].start, piece.end)
                        pieces, spent = [], 0.0
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)

    def _cut_sessions(self) -> float:
        """At idle, cut the sessions of the rows that wait for it (a no-op when none do); when
        to try again (a failure waits a minute: the next read cuts them anyway)."""
        try:
            self.store.settle_kept_sessions()
        except Exception as exc:
            log.warning(
                "ingest loader could not cut the waiting sessions", extra={"error": str(exc)}
            )
            return time.monotonic() + 60
        return time.monotonic()

    def _upkeep(self, *, idle: bool) -> None:
        """Every :data:`COMPACT_EVERY_S` each, between rounds or when idle (no round for
        :data:`IDLE_CUT_S`): sum the rollup rows of the days small rounds made grow (up to 2
        days between rounds, 8 when idle; :meth:`avila.storage.base.Store.compact_rollups`,
        ~45 ms a day at 10 M events), and rewrite one finished day of events in user order
        (:meth:`avila.storage.base.Store.order_event_days`, ~1.6 s at 830,000 events a day),
        and fold finished user days into the per-user history
        (:meth:`avila.storage.base.Store.fold_user_history`, ~2 s a day at 100 M events).
        The next round waits for each. When idle and days are left (a store upgraded with its
        history), a job looks again at the next idle tick, not a minute later: at 100 M events
        the compaction's first looks alone take ~50 of them. A failure is retried next time."""
        self._upkeep_job(
            "compact",
            "compact the rollups",
            lambda: self.store.compact_rollups(8 if idle else 2),
            idle,
        )
        self._upkeep_job("order", "order the events", lambda: self.store.order_event_days(1), idle)
        self._upkeep_job(
            "history", "fold the user history", lambda: self.store.fold_user_history(1), idle
        )

    def _upkeep_job(self, job: str, what: str, work: Callable[[], Compacted], idle: bool) -> None:
        now = time.monotonic()
        if now < self._next_upkeep[job]:
            return
        self._next_upkeep[job] = now + COMPACT_EVERY_S
        try:
            done = work()
        except Exception as exc:
            log.warning(f"ingest loader could not {what}", extra={"error": str(exc)})
            return
        if idle and done.more_left:
            self._next_upkeep[job] = now

    def _may_split(self, start: int, *, reading: bool, stored_nothing: bool = False) -> bool:
        """Whether a failing round from ``start`` may be loaded entry by entry. Where a round is
        one transaction (DuckDB), always. Elsewhere (ClickHouse) a round that failed to be read,
        or one whose every try to store it failed storing nothing of it (``stored_nothing``:
        each raised :class:`~avila.storage.load_rounds.NothingStored`, its first insert refused
        before anything was written): its entries, each a round of its own with its own
        deduplication tokens, can then duplicate nothing. Any other failure to store it may have
        stored part of it, and only the same round, with the same end (so the same tokens), may
        follow it: it is retried whole. Never a round a restart replays (below
        :attr:`_replay_end`): an earlier process may have stored part of it (the store says
        "nothing stored" of such a round's tries anyway: it finds it pending)."""
        if start < self._replay_end:
            return False
        return reading or self._transactional or stored_nothing

    def _ask_isolation(self, start: int, end: int | None) -> int:
        """Have the read thread start again at ``start`` with a marker to load ``start``..``end``
        entry by entry (:meth:`_load_entry_by_entry`); returns ``start``."""
        with self._cond:
            self._isolate = (start, end)
            self._cond.notify_all()
        return start

    def load_once(self, target: int) -> int:
        """Read and commit one round up to ``target`` in this thread; returns the rows."""
        prepared = self.prepare(self.position, target)
        self.commit(prepared)
        return prepared.rows

    def prepare(self, start: int, target: int) -> Prepared:
        """Read one round from ``start`` up to ``target`` (bounded by max_rows / max_bytes)."""
        (prepared,) = self.reader.pieces(start, target)
        return prepared

    def commit(self, prepared: Prepared) -> None:
        """Commit one whole round (from :meth:`prepare`) in this thread."""
        started = time.perf_counter()
        transaction = self._add(None, [prepared])
        self._finish(transaction, [prepared], time.perf_counter() - started)
