"""The one ingestion path: validate, drop duplicates, append to the ingest log, report.

Used by the HTTP API, the Segment adapter, the demo generator and the importer, so every event
gets the same validation and idempotency. An accepted request is one entry of the store's ingest
log (:mod:`avila.storage.ingest_log`); it returns once a group fsync made that entry durable,
and the loader moves it into the store shortly after (:mod:`avila.storage.loader`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from avila.errors import ShuttingDown
from avila.ingest.idempotency import DedupIndex, EventClaims, LocalClaims, event_key
from avila.ingest.validation import EventRows, Rejection, validate_events
from avila.metrics import Metrics
from avila.storage import frames
from avila.storage.base import Store
from avila.storage.ingest_log import IngestLog

log = logging.getLogger("avila.ingest")


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    event_ids: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class IngestService:
    def __init__(
        self,
        store: Store,
        *,
        metrics: Metrics | None = None,
        dedup_window_hours: int = 24,
        claims: EventClaims | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.dedup = DedupIndex(window_seconds=dedup_window_hours * 3600)
        #: Who else may have stored an event id (other replicas); local-only by default.
        self.claims: EventClaims = claims or LocalClaims()
        self._inflight: dict[str, asyncio.Future[int]] = {}
        #: claims confirmed in the background (their request was cancelled during its write)
        self._confirming: set[asyncio.Task[None]] = set()
        self.log: IngestLog | None = None
        self.listeners: list[Callable[[EventRows], None]] = []
        self._prune_task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Open the ingest log (recovering it), rebuild the dedup index from the store and the
        unloaded log."""
        loop = asyncio.get_running_loop()
        self.log = await loop.run_in_executor(None, self.store.open_ingest_log)
        since = datetime.now(UTC).replace(tzinfo=None) - timedelta(
            seconds=self.dedup.window_seconds
        )
        keys = await loop.run_in_executor(
            None, lambda: [event_key(p, e) for p, e in self.store.recent_event_keys(since)]
        )
        recovery = self.store.ingest_recovery
        if recovery is not None:
            keys.extend(event_key(p, e) for p, e in recovery.event_keys)
            recovery.event_keys = []  # read once; up to a full backlog's worth of ids
        self.dedup.add_committed(keys)
        log.info("dedup index loaded", extra={"keys": len(self.dedup)})
        self.log.on_group = self._record_group
        self._export_backlog(self.log)
        self._prune_task = loop.create_task(self._prune_forever(), name="dedup-prune")

    async def close(self) -> None:
        """Stop accepting events and wait for the ones in flight (the store's close then lets
        the loader drain the log)."""
        self._closing = True
        if self._prune_task is not None:
            self._prune_task.cancel()
        if self._inflight:
            pending = {id(f): f for f in self._inflight.values()}.values()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._confirming:
            await asyncio.gather(*self._confirming, return_exceptions=True)
        await self.claims.close()

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(60)
            self.dedup.prune()
            self.metrics.dedup_keys.set(len(self.dedup))

    def _export_backlog(self, ingest_log: IngestLog) -> None:
        m = self.metrics
        progress = ingest_log.progress
        m.backlog_events.set_function(lambda: ingest_log.backlog_events)
        m.backlog_bytes.set_function(lambda: max(0, progress.durable - progress.loaded))
        m.backlog_age.set_function(ingest_log.oldest_unloaded_age)
        m.loader_rows_per_s.set_function(lambda: progress.rows_per_s)
        m.quarantined.set_function(ingest_log.quarantined)
        m.loader_rows.set_function(lambda: progress.loaded_rows)

    def _record_group(self, events: int, requests: int, seconds: float) -> None:
        # Called on the log's writer thread; prometheus metrics are thread-safe.
        m = self.metrics
        m.commit_events.observe(events)
        m.commit_requests.observe(requests)
        m.commit_latency.observe(seconds)

    async def ingest(
        self,
        raws: list[msgspec.Raw | bytes],
        project_id: str,
        *,
        path_prefix: str = "events",
        single: bool = False,
    ) -> IngestResult:
        """Validate ``raws`` and append the accepted events to the ingest log; returns once
        they are durable there."""
        rows, rejected = validate_events(raws, project_id, path_prefix=path_prefix, single=single)
        return await self.ingest_rows(rows, rejected)

    async def ingest_rows(
        self, rows: EventRows, rejected: list[Rejection] | None = None
    ) -> IngestResult:
        result = IngestResult(rejected=list(rejected or []))
        project_id = rows.project_id
        keep: list[int] = []
        keys: list[str] = []
        waits: list[asyncio.Future[int]] = []
        seen_here: set[str] = set()
        committed = self.dedup.keys
        inflight = self._inflight
        all_keys = [event_key(project_id, event_id) for event_id in rows.event_ids]
        if (
            committed.keys().isdisjoint(all_keys)
            and inflight.keys().isdisjoint(all_keys)
            and len(set(all_keys)) == len(all_keys)
        ):
            keys = all_keys  # the common case, checked in C: no duplicate anywhere
        else:
            for position, key in enumerate(all_keys):
                if key in committed or key in seen_here:
                    result.duplicates += 1
                    continue
                other = inflight.get(key)
                if other is not None:
                    result.duplicates += 1
                    waits.append(other)
                    continue
                seen_here.add(key)
                keep.append(position)
                keys.append(key)
        if keys:
            elsewhere = await self.claims.claim(keys)
            if elsewhere:  # stored by another replica (shared claims only)
                result.duplicates += len(elsewhere)
                positions = keep if len(keep) == len(keys) else list(range(len(keys)))
                keep = [p for i, p in enumerate(positions) if i not in elsewhere]
                keys = [k for i, k in enumerate(keys) if i not in elsewhere]
        accepted_rows = rows if len(keys) == len(rows) else rows.keep(keep)
        own: asyncio.Future[int] | None = None
        if keys:
            if self._closing or self.log is None:
                self.claims.release(keys)
                raise ShuttingDown("the server is shutting down; retry shortly")
            try:
                own = self.log.append(frames.encode_events(accepted_rows.to_columns()), len(keys))
            except BaseException:
                self.claims.release(keys)
                raise
            inflight.update(dict.fromkeys(keys, own))
            own.add_done_callback(functools.partial(self._settle, keys=keys))
            waits.append(own)
        failure: BaseException | None = None
        if waits:
            # A duplicate of an in-flight event is only "already stored" once its entry is.
            # shield: a client that disconnects must not cancel a write other requests share.
            try:
                if len(waits) == 1:
                    await asyncio.shield(waits[0])
                else:
                    # Every write is waited for even when one fails first: our own keys are
                    # confirmed (below) if our own write is durable, whatever the others did.
                    distinct = {id(w): w for w in waits}.values()
                    outcomes = await asyncio.gather(
                        *(asyncio.shield(w) for w in distinct), return_exceptions=True
                    )
                    failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
            except BaseException:
                # Cancelled (the caller went away) or our own write failed (released by
                # _settle): a write that goes on without us is still confirmed once durable.
                if own is not None:
                    own.add_done_callback(functools.partial(self._confirm_later, keys=keys))
                raise
        if own is not None and (failure is None or _succeeded(own)):
            await self.claims.confirm(keys)
        if failure is not None:
            raise failure
        result.accepted = len(keys)
        result.event_ids = list(rows.event_ids)
        m = self.metrics
        if result.accepted:
            m.events.labels("accepted").inc(result.accepted)
        if result.duplicates:
            m.events.labels("duplicate").inc(result.duplicates)
        if result.rejected:
            m.events.labels("rejected").inc(len(result.rejected))
        if keys:
            for listener in self.listeners:
                listener(accepted_rows)
        return result

    def _confirm_later(self, future: asyncio.Future[int], keys: list[str]) -> None:
        """``future`` (a write of ``keys``) is done and nobody waits to confirm its claims: do it
        in the background when it is durable (if not, :meth:`_settle` released them)."""
        if not _succeeded(future):
            return
        task = asyncio.get_running_loop().create_task(self.claims.confirm(keys))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    def _settle(self, future: asyncio.Future[int], keys: list[str]) -> None:
        inflight = self._inflight
        pop = inflight.pop
        for key in keys:
            pop(key, None)
        if _succeeded(future):
            self.dedup.add_committed(keys, at=time.monotonic())
        else:
            self.claims.release(keys)


def _succeeded(future: asyncio.Future[int]) -> bool:
    """``future`` (done) has a result: that write is durable."""
    return not future.cancelled() and future.exception() is None


def result_body(result: IngestResult, *, batch: bool) -> dict[str, Any]:
    """The API's 202 body for a single or batch ingest."""
    body: dict[str, Any] = {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "event_ids": result.event_ids,
    }
    if batch:
        body["rejected"] = [r.to_dict() for r in result.rejected]
    return body
