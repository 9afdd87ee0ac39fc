"""The one ingestion path: validate, drop duplicates, group-commit, report.

Used by the HTTP API, the demo generator and (later) importers and protocol adapters, so every
event gets the same validation and idempotency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from avila.ingest.commit import FlushStats, GroupCommitter
from avila.ingest.idempotency import DedupIndex, event_key
from avila.ingest.validation import EventRows, Rejection, validate_events
from avila.metrics import Metrics
from avila.storage.base import Store

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
        flush_max_events: int = 20_000,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.dedup = DedupIndex(window_seconds=dedup_window_hours * 3600)
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self.committer = GroupCommitter(
            store,
            max_events=flush_max_events,
            on_flush=self._record_flush,
        )
        self.listeners: list[Callable[[EventRows], None]] = []
        self._prune_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Rebuild the dedup index from the store and start the writer."""
        since = datetime.now(UTC).replace(tzinfo=None) - timedelta(
            seconds=self.dedup.window_seconds
        )
        loop = asyncio.get_running_loop()
        keys = await loop.run_in_executor(
            None, lambda: [event_key(p, e) for p, e in self.store.recent_event_keys(since)]
        )
        self.dedup.add_committed(keys)
        log.info("dedup index loaded", extra={"keys": len(keys)})
        self.committer.start()
        self._prune_task = loop.create_task(self._prune_forever(), name="dedup-prune")

    async def close(self) -> None:
        """Flush everything pending (graceful shutdown)."""
        if self._prune_task is not None:
            self._prune_task.cancel()
        await self.committer.close()

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(60)
            self.dedup.prune()
            self.metrics.dedup_keys.set(len(self.dedup))

    def _record_flush(self, stats: FlushStats) -> None:
        m = self.metrics
        m.commit_events.observe(stats.events)
        m.commit_requests.observe(stats.requests)
        m.commit_latency.observe(stats.seconds)
        m.dedup_keys.set(len(self.dedup))
        m.dedup_evicted.set(self.dedup.evicted_early)

    async def ingest(
        self,
        raws: list[msgspec.Raw | bytes],
        project_id: str,
        *,
        path_prefix: str = "events",
        single: bool = False,
    ) -> IngestResult:
        """Validate and durably store ``raws``; returns once accepted events are committed."""
        rows, rejected = validate_events(raws, project_id, path_prefix=path_prefix, single=single)
        return await self.ingest_rows(rows, rejected)

    async def ingest_rows(
        self, rows: EventRows, rejected: list[Rejection] | None = None
    ) -> IngestResult:
        result = IngestResult(rejected=list(rejected or []))
        project_id = rows.project_id
        keep: list[int] = []
        keys: list[str] = []
        waits: list[asyncio.Future[None]] = []
        seen_here: set[str] = set()
        committed = self.dedup.keys
        inflight = self._inflight
        for position, event_id in enumerate(rows.event_ids):
            key = event_key(project_id, event_id)
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
        accepted_rows = rows if len(keep) == len(rows) else rows.keep(keep)
        if keys:
            future = self.committer.submit(accepted_rows.to_columns(), len(keys))
            for key in keys:
                inflight[key] = future
            future.add_done_callback(lambda f, keys=keys: self._settle(f, keys))
            waits.append(future)
            self.metrics.pending_events.set(self.committer.pending_events)
        if waits:
            # A duplicate of an in-flight event is only "already stored" once that commit is.
            # shield: a client that disconnects must not cancel a commit other requests share.
            await asyncio.gather(*(asyncio.shield(w) for w in {id(w): w for w in waits}.values()))
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

    def _settle(self, future: asyncio.Future[None], keys: list[str]) -> None:
        inflight = self._inflight
        for key in keys:
            inflight.pop(key, None)
        if not future.cancelled() and future.exception() is None:
            self.dedup.add_committed(keys, at=time.monotonic())


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
