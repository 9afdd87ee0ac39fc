"""The one telemetry path (HTTP, MQTT bridge, factory demo): validate, register, group-commit.

:class:`TelemetryCommitter` is the events' group commit (``avila.ingest.commit``) for Arrow
tables: requests queue their rows and await a future; when the writer is idle a flush starts at
once with everything pending, and while it runs new rows gather for the next one. A flush
appends the new devices' rows, then the telemetry rows (two store transactions, in that order),
and only then resolves the futures: a 202 (or an MQTT acknowledgement) means the readings are
durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from avila.errors import ShuttingDown, StorageUnavailable
from avila.industry40.devices import DeviceRegistry, Key
from avila.industry40.telemetry import (
    MAX_READINGS,
    Reading,
    Rejection,
    TelemetryRows,
    build_rows,
    parse_body,
)
from avila.storage.base import Store

log = logging.getLogger("avila.industry40")

Pending = tuple[pa.Table, pa.Table | None, list[Key], asyncio.Future[None]]


class TelemetryCommitter:
    def __init__(self, store: Store, registry: DeviceRegistry, *, max_rows: int = 500_000) -> None:
        self.store = store
        self.registry = registry
        self.max_rows = max_rows
        self._pending: list[Pending] = []
        self._busy = False
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.flushes = 0

    def submit(
        self, table: pa.Table, devices: pa.Table | None, keys: list[Key]
    ) -> asyncio.Future[None]:
        if self._closing:
            raise ShuttingDown("the server is shutting down; retry shortly")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((table, devices, keys, future))
        if not self._busy:
            self._start()
        return future

    def _start(self) -> None:
        batch: list[Pending] = []
        rows = 0
        while self._pending and (not batch or rows + self._pending[0][0].num_rows <= self.max_rows):
            item = self._pending.pop(0)
            batch.append(item)
            rows += item[0].num_rows
        self._busy = True
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        task.add_done_callback(lambda _: self._finish())

    async def _flush(self, batch: list[Pending]) -> None:
        devices = [d for _, d, _, _ in batch if d is not None]
        try:
            if devices:
                await self.store.append_table_async("devices", pa.concat_tables(devices))
            tables = [t for t, _, _, _ in batch]
            await self.store.append_table_async(
                "telemetry", pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            )
        except Exception as exc:
            log.error("telemetry commit failed", extra={"error": str(exc)})
            error = StorageUnavailable(f"could not commit telemetry: {exc}")
            for _, _, keys, future in batch:
                self.registry.forget(keys)
                if not future.done():
                    future.set_exception(error)
            return
        self.flushes += 1
        for _, _, _, future in batch:
            if not future.done():
                future.set_result(None)

    def _finish(self) -> None:
        self._busy = False
        if self._pending:
            self._start()
        else:
            self._idle.set()

    async def close(self) -> None:
        self._closing = True
        await self._idle.wait()


@dataclass
class TelemetryResult:
    accepted: int = 0
    stored_values: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": [r.to_dict() for r in self.rejected],
            "stored_values": self.stored_values,
        }


class TelemetryService:
    """Ingest readings for a project; listeners see every committed batch (alarms)."""

    def __init__(self, store: Store, registry: DeviceRegistry | None = None) -> None:
        self.store = store
        self.registry = registry or DeviceRegistry(store)
        self.committer: TelemetryCommitter | None = None
        self.listeners: list[Callable[[TelemetryRows], None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.last_seen_interval_s = 5.0

    async def start(self) -> None:
        count = await asyncio.to_thread(self.registry.load)
        log.info("device registry loaded", extra={"devices": count})
        self.committer = TelemetryCommitter(self.store, self.registry)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        if self.committer is not None:
            await self.committer.close()
        await asyncio.to_thread(self.registry.flush_last_seen)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.last_seen_interval_s)
            try:
                await asyncio.to_thread(self.registry.flush_last_seen)
            except Exception as exc:  # retried next round; last_seen is advisory
                log.warning("last_seen flush failed", extra={"error": str(exc)})

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
    ) -> TelemetryResult:
        """Store validated readings durably; returns after the commit."""
        result = TelemetryResult()
        if not indexed:
            return result
        rows, rejected = build_rows(project_id, indexed, now=now, single=single)
        result.rejected = rejected
        if not len(rows):
            return result
        if self.committer is None:
            raise ShuttingDown("telemetry ingestion is not started")
        started = time.perf_counter()
        devices, keys = self.registry.claim_new(rows)
        future = self.committer.submit(rows.table, devices, keys)
        # shield: a client that goes away must not cancel a commit other requests share.
        await asyncio.shield(future)
        self.registry.touch(rows)
        for listener in self.listeners:
            try:
                listener(rows)
            except Exception:
                log.exception("telemetry listener failed")
        result.accepted = len(rows)
        result.stored_values = rows.table.num_rows
        log.debug("telemetry committed", extra={"s": time.perf_counter() - started})
        return result
