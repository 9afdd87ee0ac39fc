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

Rounds start as soon as a durable position arrives, so at low load an acknowledged event is in
the store a few milliseconds later; under load rounds grow by themselves.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from avila.storage import frames
from avila.storage.ingest_log import read_frames, segment_bases, segment_path
from avila.storage.schema import columns_to_arrow

if TYPE_CHECKING:
    from avila.storage.duckdb.store import DuckDBStore

log = logging.getLogger("avila.ingest.loader")

MESSAGE_SCHEMA = pa.schema(
    [("project_id", pa.string()), ("message_id", pa.string()), ("received_at", pa.timestamp("us"))]
)

Report = Callable[[int, int, float], None]


class Loader:
    def __init__(
        self,
        store: DuckDBStore,
        directory: Path,
        report: Report,
        *,
        max_bytes: int = 48 << 20,
        max_rows: int = 100_000,
    ) -> None:
        self.store = store
        self.directory = Path(directory)
        self.report = report
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.position = store.log_position()
        self._target = self.position
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest-loader", daemon=True)
        self._thread.start()

    def notify(self, durable: int) -> None:
        with self._cond:
            if durable > self._target:
                self._target = durable
                self._cond.notify()

    def stop(self) -> None:
        """Finish the round in progress and stop (what is not loaded stays in the log)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        delay = 0.05
        while True:
            with self._cond:
                while self._target <= self.position and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                target = self._target
            try:
                self.load_once(target)
                delay = 0.05
            except Exception as exc:
                self.failures += 1
                log.error("ingest loader round failed; retrying", extra={"error": str(exc)})
                with self._cond:
                    self._cond.wait(delay)
                delay = min(delay * 2, 5.0)

    def load_once(self, target: int) -> int:
        """Load frames from the current position up to ``target`` (one transaction); returns
        the rows loaded."""
        started = time.perf_counter()
        event_batches: list[dict[str, list[Any]]] = []
        readings: list[pa.Table] = []
        devices: list[pa.Table] = []
        messages: dict[str, list[Any]] = {"project_id": [], "message_id": [], "received_at": []}
        end = self.position
        rows = 0
        for frame_end, payload in read_frames(self.directory, self.position, target, self.max_bytes):
            kind = frames.kind(payload)
            if kind == frames.EVENTS:
                columns = frames.decode_events(memoryview(payload))
                event_batches.append(columns)
                rows += len(columns["event_id"])
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
            if rows >= self.max_rows:
                break
        if end == self.position:
            # Nothing readable although the log says it is durable: its segment is gone (deleted
            # by hand). Skip to the target rather than stall forever; say so loudly.
            log.error(
                "ingest log: durable range unreadable; skipped",
                extra={"from": self.position, "to": target},
            )
            end = target
        tables: list[tuple[str, pa.Table]] = []
        if readings:
            tables.append(("telemetry", pa.concat_tables(readings) if len(readings) > 1 else readings[0]))
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
        self.store.commit_log_batch(
            end,
            events=columns_to_arrow(event_batches) if event_batches else None,
            devices=pa.concat_tables(devices) if devices else None,
            tables=tables,
        )
        self.position = end
        self.report(end, rows, time.perf_counter() - started)
        self.trim()
        return rows

    def trim(self) -> None:
        """Delete segments whose every frame is loaded (the newest is never deleted: the log
        may still be appending to it)."""
        bases = segment_bases(self.directory)
        for base, following in zip(bases, bases[1:], strict=False):
            if following > self.position:
                break
            try:
                os.unlink(segment_path(self.directory, base))
            except FileNotFoundError:
                pass
