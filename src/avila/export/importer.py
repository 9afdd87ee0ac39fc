"""Send imported chunks somewhere that ingests them, and total the outcome.

Two destinations, because DuckDB admits one process per database file:

- :class:`DirectTarget`: no server is running; open the store in this process and ingest
  through :class:`~avila.ingest.service.IngestService` (same validation, same dedup index,
  same ingest log: each chunk is acknowledged by the log and loaded by the loader, which has
  drained the log when the target closes).
- :class:`HttpTarget`: a server holds the store; POST the events to its batch endpoint with an
  API key (validation and dedup happen there). Uses only the standard library.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from avila.errors import AvilaError, StorageUnavailable
from avila.export.reader import Chunk
from avila.ingest.service import IngestService
from avila.ingest.validation import MAX_EVENT_BYTES, validate_events
from avila.storage.base import Store

#: Rejections kept for the summary (all are counted).
MAX_REPORTED = 1000


@dataclass(frozen=True)
class RowRejection:
    row: int
    code: str
    message: str
    path: str = ""


@dataclass
class ImportSummary:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[RowRejection] = field(default_factory=list)
    #: Bulk import: rows the per-event validator judged (the rest were validated by column).
    slow_rows: int = 0
    #: Bulk import: seconds spent deduplicating and committing after the last batch.
    finish_seconds: float = 0.0

    def reject(self, rejection: RowRejection) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_REPORTED:
            self.rejections.append(rejection)

    def add(self, chunk: Chunk, body: dict[str, Any]) -> None:
        """Count one chunk's outcome (``body`` is the batch endpoint's 202 body)."""
        self.rows += len(chunk.events) + len(chunk.unreadable)
        self.accepted += int(body.get("accepted", 0))
        self.duplicates += int(body.get("duplicates", 0))
        for bad in chunk.unreadable:
            self.reject(RowRejection(bad.row, bad.code, bad.message, bad.path))
        for item in body.get("rejected", []):
            path = str(item.get("path", ""))
            # "events[3].timestamp" -> "timestamp": the row number says which event.
            path = path.split("]", 1)[1].lstrip(".") if path.startswith("events[") else path
            self.reject(
                RowRejection(chunk.rows[int(item["index"])], item["code"], item["message"], path)
            )


class Target(Protocol):
    def send(self, chunk: Chunk) -> dict[str, Any]: ...

    def close(self) -> None: ...


class DirectTarget:
    """Ingest into a store this process opens (no server may hold it)."""

    def __init__(self, store: Store, project_id: str) -> None:
        self.project_id = project_id
        self._runner = asyncio.Runner()
        self._service = IngestService(store)
        self._runner.run(self._service.start())

    def send(self, chunk: Chunk) -> dict[str, Any]:
        if not chunk.events:
            return {}
        result = self._runner.run(self._service.ingest(chunk.events, self.project_id))
        return {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": [r.to_dict() for r in result.rejected],
        }

    def close(self) -> None:
        try:
            self._runner.run(self._service.close())
        finally:
            self._runner.close()


#: The batch endpoint's limits (``avila.api.events``: ``MAX_BATCH_BYTES``, ``MAX_BATCH_EVENTS``);
#: a request past either is refused whole (413), so a chunk is sent in as many requests as it
#: takes to stay within both.
HTTP_BATCH_BYTES = 10 * 1024 * 1024
HTTP_BATCH_EVENTS = 10_000
_ENVELOPE_BYTES = len(b'{"events":[]}')


def _requests(events: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """``(index of the first event, events)`` of each request that ``events`` need."""
    start = 0
    size = _ENVELOPE_BYTES
    for i, event in enumerate(events):
        grown = size + len(event) + (i > start)
        if i > start and (grown > HTTP_BATCH_BYTES or i - start >= HTTP_BATCH_EVENTS):
            yield start, events[start:i]
            start, grown = i, _ENVELOPE_BYTES + len(event)
        size = grown
    if start < len(events):
        yield start, events[start:]


class HttpTarget:
    """POST chunks to ``{url}/api/v1/events/batch``, each in requests within the endpoint's
    limits (10,000 events, 10 MB). An event over the 32 KB event limit is rejected here with
    the API's own validator (the same code and message) rather than sent: one large enough
    would make its whole request too large."""

    def __init__(self, url: str, api_key: str, timeout: float = 120) -> None:
        self.endpoint = url.rstrip("/") + "/api/v1/events/batch"
        self.api_key = api_key
        self.timeout = timeout

    def send(self, chunk: Chunk) -> dict[str, Any]:
        total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "rejected": []}
        sent: list[bytes] = []
        positions: list[int] = []  # index in ``chunk.events`` of each event in ``sent``
        for i, event in enumerate(chunk.events):
            if len(event) > MAX_EVENT_BYTES:
                _, rejections = validate_events([event], "", path_prefix="events")
                total["rejected"].extend({**r.to_dict(), "index": i} for r in rejections)
            else:
                sent.append(event)
                positions.append(i)
        for start, events in _requests(sent):
            body = self._post(events)
            total["accepted"] += int(body.get("accepted", 0))
            total["duplicates"] += int(body.get("duplicates", 0))
            for item in body.get("rejected", []):
                total["rejected"].append({**item, "index": positions[start + int(item["index"])]})
        total["rejected"].sort(key=lambda item: item["index"])
        return total

    def _post(self, events: list[bytes]) -> dict[str, Any]:
        body = b'{"events":[' + b",".join(events) + b"]}"
        request = urllib.request.Request(
            self.endpoint,
            data=body,
            method="POST",
            headers={"content-type": "application/json", "x-api-key": self.api_key},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AvilaError(f"{self.endpoint} answered {exc.code}: {detail}") from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot reach {self.endpoint}: {exc}") from None

    def close(self) -> None:
        pass


def run_import(
    chunks: Iterable[Chunk], target: Target, on_chunk: Callable[[Chunk], None] | None = None
) -> ImportSummary:
    """Send every chunk; returns the totals. ``on_chunk`` sees each chunk after it is sent."""
    summary = ImportSummary()
    try:
        for chunk in chunks:
            summary.add(chunk, target.send(chunk))
            if on_chunk is not None:
                on_chunk(chunk)
    finally:
        target.close()
    return summary
