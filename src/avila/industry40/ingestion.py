"""The one telemetry path (HTTP, MQTT bridge, factory demo): validate, register, log.

Readings of one request are one entry of the store's ingest log (:mod:`avila.storage.ingest_log`)
together with the rows of devices seen for the first time; the request returns (202, or an MQTT
acknowledgement) once a group fsync made the entry durable, and the loader moves readings and
devices into the store in one transaction shortly after.

Redelivery dedup: an entry may carry a message id (the MQTT bridge's, see
:mod:`avila.industry40.mqtt`); a message id already in the log or the store within the dedup
window is answered as a duplicate and not stored again. The ids are rebuilt at start from the
store's ``telemetry_messages`` table and the unloaded log, and ids older than the window are
forgotten every :data:`MESSAGE_PRUNE_INTERVAL_S` (as the event dedup index is). An id from the
store is dated by its message's receive time (``received_at``, to the second, never earlier),
so it leaves when its window ends, not a window after the restart; an id from the unloaded log
is dated at start (the log's recovery keeps no receive time; such entries are seconds old
unless the server was down with a backlog).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from avila.errors import ShuttingDown
from avila.industry40 import records
from avila.industry40.devices import DeviceRegistry
from avila.industry40.telemetry import (
    MAX_READINGS,
    Reading,
    Rejection,
    TelemetryRows,
    build_rows,
    parse_body,
)
from avila.ingest.idempotency import DedupIndex
from avila.ingest.validation import epoch_us
from avila.storage import frames
from avila.storage.base import Store
from avila.storage.ingest_log import IngestLog

log = logging.getLogger("avila.industry40")

#: Message ids remembered for redelivery dedup (the broker redelivers within minutes).
MESSAGE_WINDOW_S = 24 * 3600
MAX_MESSAGE_IDS = 2_000_000
#: How often message ids older than the window are forgotten.
MESSAGE_PRUNE_INTERVAL_S = 60.0


@dataclass
class TelemetryResult:
    accepted: int = 0
    stored_values: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": [r.to_dict() for r in self.rejected],
            "stored_values": self.stored_values,
        }


class TelemetryService:
    """Ingest readings for a project; listeners see every durable batch (alarms)."""

    def __init__(self, store: Store, registry: DeviceRegistry | None = None) -> None:
        self.store = store
        self.registry = registry or DeviceRegistry(store)
        self.log: IngestLog | None = None
        self.messages = DedupIndex(window_seconds=MESSAGE_WINDOW_S, max_keys=MAX_MESSAGE_IDS)
        #: Monotonic seconds that date message ids (a seam: tests move it past the window).
        self.clock: Callable[[], float] = time.monotonic
        self.message_prune_interval_s = MESSAGE_PRUNE_INTERVAL_S
        self._pruner: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Future[int]] = {}
        self.listeners: list[Callable[[TelemetryRows], None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.last_seen_interval_s = 5.0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.log = await loop.run_in_executor(None, self.store.open_ingest_log)
        count = await asyncio.to_thread(self.registry.load)
        log.info("device registry loaded", extra={"devices": count})
        wall = datetime.now(UTC).replace(tzinfo=None)
        rows = await asyncio.to_thread(
            self.store.query,
            f"SELECT project_id, message_id, {records.epoch_us(self.store, 'received_at')}"
            " FROM telemetry_messages WHERE received_at >= ? ORDER BY received_at",
            [wall - timedelta(seconds=MESSAGE_WINDOW_S)],
        )
        self._add_stored_messages(rows, wall)
        recovery = self.store.ingest_recovery
        if recovery is not None:
            known = recovery.telemetry_messages
            recovery.telemetry_messages = []  # read once; up to a full backlog's worth of ids
            self.messages.add_committed((_message_key(p, m) for p, m in known), at=self.clock())
        self._flusher = loop.create_task(self._flush_forever())
        self._pruner = loop.create_task(self._prune_forever(), name="telemetry-message-prune")

    def _add_stored_messages(self, rows: list[tuple[Any, ...]], wall: datetime) -> None:
        """Remember the store's message ids ``(project, id, received epoch µs)``, oldest first,
        each dated ``clock() - age`` (``age``: whole seconds from its receive time to ``wall``,
        rounded down: the id is kept at least its window)."""
        now = self.clock()
        wall_us = epoch_us(wall)

        def age_s(row: tuple[Any, ...]) -> int:
            return max(0, (wall_us - int(row[2])) // 1_000_000)

        # Oldest first (the prune stops at the first id still in its window): one call per
        # second of receive times.
        for age, group in itertools.groupby(rows, key=age_s):
            self.messages.add_committed((_message_key(p, m) for p, m, _ in group), at=now - age)

    async def close(self) -> None:
        self._closing = True
        if self._flusher is not None:
            self._flusher.cancel()
        if self._pruner is not None:
            self._pruner.cancel()
        if self._inflight:
            pending = {id(f): f for f in self._inflight.values()}.values()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.to_thread(self.registry.flush_last_seen)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.last_seen_interval_s)
            try:
                await asyncio.to_thread(self.registry.flush_last_seen)
            except Exception as exc:  # retried next round; last_seen is advisory
                log.warning("last_seen flush failed", extra={"error": str(exc)})

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(self.message_prune_interval_s)
            self.prune_messages()

    def prune_messages(self, now: float | None = None) -> int:
        """Forget message ids older than the window (at ``now``, by :attr:`clock`); returns
        how many."""
        dropped = self.messages.prune(self.clock() if now is None else now)
        if dropped:
            log.debug("telemetry message ids pruned", extra={"dropped": dropped})
        return dropped

    async def ingest_body(self, body: bytes, project_id: str) -> tuple[TelemetryResult, bool]:
        """Decode and store a request body; returns the result and whether it was a single
        reading."""
        parsed = parse_body(body, max_readings=MAX_READINGS)
        result = await self.ingest_readings(parsed.readings, project_id, single=parsed.single)
        result.rejected = sorted([*parsed.rejected, *result.rejected], key=lambda r: r.index)
        return result, parsed.single

    async def ingest_readings(
        self,
        indexed: list[tuple[int, Reading]],
        project_id: str,
        *,
        single: bool = False,
        now: datetime | None = None,
        message_id: str | None = None,
        check_message: bool = True,
    ) -> TelemetryResult:
        """Store validated readings durably (in the ingest log); returns once they are.

        ``message_id``: the identity of the message that carried them, recorded with them.
        With ``check_message``, a message id seen before (stored, or in flight) makes this call
        a duplicate that stores nothing."""
        result = TelemetryResult()
        key = _message_key(project_id, message_id) if message_id else None
        if key is not None and check_message:
            if key in self.messages.keys:
                result.duplicate = True
                return result
            other = self._inflight.get(key)
            if other is not None:
                await asyncio.shield(other)
                result.duplicate = True
                return result
        if not indexed:
            return result
        rows, rejected = build_rows(project_id, indexed, now=now, single=single)
        result.rejected = rejected
        if not len(rows):
            return result
        if self.log is None or self._closing:
            raise ShuttingDown("telemetry ingestion is not running")
        started = time.perf_counter()
        devices, keys = self.registry.claim_new(rows)
        payload = frames.encode_telemetry(
            rows.table, devices, (project_id, message_id) if message_id else None
        )
        try:
            future = self.log.append(payload, rows.table.num_rows)
        except Exception:
            self.registry.forget(keys)
            raise
        if key is not None:
            self._inflight[key] = future
        try:
            # shield: a client that goes away must not cancel a write other requests share.
            await asyncio.shield(future)
        except Exception:
            self.registry.forget(keys)
            raise
        finally:
            if key is not None:
                self._inflight.pop(key, None)
        if key is not None:
            self.messages.add_committed([key], at=self.clock())
        self.registry.touch(rows)
        for listener in self.listeners:
            try:
                listener(rows)
            except Exception:
                log.exception("telemetry listener failed")
        result.accepted = len(rows)
        result.stored_values = rows.table.num_rows
        log.debug("telemetry logged", extra={"s": time.perf_counter() - started})
        return result


def _message_key(project_id: str, message_id: str | None) -> str:
    return f"{project_id}\x1f{message_id}"
