"""The commit side of the loader (:class:`avila.storage.loader.Loader`): adding pieces to a
round's transaction, committing it with its log position and trimming the loaded segments, and
loading a failing round entry by entry, setting aside the entries the store refuses for good
(:mod:`avila.storage.quarantine`)."""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from avila.storage import quarantine
from avila.storage.load_rounds import NothingStored, OneBatch, Prepared, Round
from avila.storage.log_segments import segment_bases, segment_path
from avila.storage.round_reading import RoundReader

if TYPE_CHECKING:
    from avila.storage.base import Store

log = logging.getLogger("avila.ingest.loader")

Report = Callable[[int, int, float], None]


class _Stopped(BaseException):
    """The loader stops: leave a split round where it is (not an entry's failure)."""


class _PartlyStored(BaseException):
    """A range failed while being stored in a store without round transactions: it may be
    partly stored, so only that range, whole, may be loaded next (never split)."""


class RoundCommits:
    """The loader's commits: its rounds' transactions and entry-by-entry loading. Holds no
    state of its own: :class:`~avila.storage.loader.Loader` sets these attributes."""

    store: Store
    directory: Path
    report: Report
    reader: RoundReader
    piece_rows: int | None
    position: int
    failures: int
    quarantined: int
    _stopping: bool
    _transactional: bool
    _set_aside_at: collections.deque[float]

    def _load_entry_by_entry(self, start: int, end: int) -> None:
        """Load ``start``..``end`` splitting it where it fails, and set aside the entries the
        store refuses for good (:func:`avila.storage.quarantine.isolate`); retried (from what
        is loaded) while the store cannot commit at all."""
        delay = 0.05
        while not self._stopping:
            try:
                pending = self.store.pending_log_round()
                if pending > self.position:  # partly stored (ClickHouse): that round, whole
                    held = quarantine.entries_between(self.directory, self.position, pending)
                    if len(held) == 1:  # (perhaps a set-aside whose skip failed half-way)
                        quarantine.isolate(
                            held, self._load_range, self._set_aside, self.directory, self._allow
                        )
                    else:
                        self._load_range(self.position, pending)
                # a set-aside whose commit raised may have landed anyway: keep its file then
                quarantine.settle(self.directory, self.store.log_position())
                entries = quarantine.entries_between(self.directory, self.position, end)
                quarantine.isolate(
                    entries, self._load_range, self._set_aside, self.directory, self._allow
                )
                if self.position < end:  # bytes after the last entry (a torn tail): passed
                    self._load_range(self.position, end)
                return
            except _Stopped:
                return
            except (Exception, _PartlyStored) as exc:
                self.failures += 1
                log.error(
                    "ingest loader could not load entry by entry; retrying",
                    extra={"error": str(exc)},
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _load_range(self, start: int, end: int) -> None:
        """Load the entries from ``start`` up to ``end`` in one transaction, or raise."""
        if self._stopping:
            raise _Stopped
        transaction: Round | None = None
        pieces: list[Prepared] = []
        try:
            for piece in self.reader.pieces(start, end, self.piece_rows, whole=True):
                transaction = self._add(transaction, [piece])
                pieces.append(piece)
        except BaseException:
            if transaction is not None:
                transaction.abort()
            raise
        assert transaction is not None
        try:
            self._finish(transaction, pieces, 0.0)
        except NothingStored:
            raise  # (may be split: see _may_split)
        except Exception as exc:
            if self._transactional:
                raise
            # not to be split (see _may_split): the next try loads this range whole
            raise _PartlyStored(str(exc)) from exc

    def _allow(self) -> None:
        """Raise past :data:`quarantine.LIMIT` entries set aside per window."""
        now = time.monotonic()
        while self._set_aside_at and self._set_aside_at[0] < now - quarantine.LIMIT_WINDOW_S:
            self._set_aside_at.popleft()
        if len(self._set_aside_at) >= quarantine.LIMIT:
            raise RuntimeError(
                f"{quarantine.LIMIT} entries set aside in {quarantine.LIMIT_WINDOW_S:.0f} s:"
                " retrying instead"
            )

    def _set_aside(self, start: int, end: int) -> None:
        """Record the log position ``end`` without the entry from ``start`` (kept elsewhere)."""
        if self._stopping:
            raise _Stopped
        nothing = Prepared(end, 0, None, None, [], 0.0, start)
        self._set_aside_at.append(time.monotonic())
        self.quarantined += 1  # (counted before its report wakes a reader)
        try:
            self._finish(self._add(None, [nothing]), [nothing], 0.0)
        except BaseException:
            self.quarantined -= 1
            self._set_aside_at.pop()
            raise

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

    def trim(self) -> None:
        """Delete segments whose every frame is loaded (the newest is never deleted: the log
        may still be appending to it)."""
        bases = segment_bases(self.directory)
        for base, following in zip(bases, bases[1:], strict=False):
            if following > self.position:
                break
            with suppress(FileNotFoundError):
                os.unlink(segment_path(self.directory, base))
