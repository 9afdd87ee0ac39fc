"""The ingestion listener that feeds the live bus: accepted events and activity counters.

It runs inside the ingest path after each commit, so it does O(1) work per batch when nobody
subscribes to the project's ``events`` channel, and only a reference hand-over per subscriber
otherwise: event payloads are built by :class:`EventView` when a WebSocket sender takes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, overload

from msgspec import Raw

from avila.ingest.validation import EventRows
from avila.live.activity import ActivityTracker
from avila.live.bus import LiveBus
from avila.storage.schema import EVENT_TYPES

#: Stored snake_case type -> the seed's PascalCase type.
PASCAL_TYPES: dict[str, str] = {snake: pascal for pascal, snake in EVENT_TYPES.items()}
_EPOCH = datetime(1970, 1, 1)


def iso_from_us(epoch_us: int) -> str:
    """RFC 3339 UTC text (``...T10:00:00.123000Z``) of epoch microseconds."""
    moment = _EPOCH + timedelta(microseconds=epoch_us)
    return moment.isoformat(timespec="microseconds") + "Z"


class EventView(Sequence[dict[str, Any]]):
    """Accepted events of one batch, as the seed's event JSON, built on access.

    ``view[i]`` is ``{"event_id", "user_id", "session_id", "timestamp", "received_at",
    "project_id", "event_type": {"type", "data"}, "metadata", "context"}``; the JSON parts are
    :class:`msgspec.Raw` (the stored text, byte for byte).
    """

    __slots__ = ("_columns", "_project_id", "_received_at")

    def __init__(self, rows: EventRows) -> None:
        self._columns = rows.columns
        self._project_id = rows.project_id
        self._received_at = rows.received_at.isoformat(timespec="microseconds") + "Z"

    @property
    def columns(self) -> dict[str, list[Any]]:
        """The batch's columns (filters read ``event_type`` and ``user_id``)."""
        return self._columns

    def __len__(self) -> int:
        return len(self._columns["event_id"])

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        c = self._columns
        return {
            "event_id": c["event_id"][index],
            "user_id": c["user_id"][index],
            "session_id": c["session_id"][index],
            "timestamp": iso_from_us(c["ts"][index]),
            "received_at": self._received_at,
            "project_id": self._project_id,
            "event_type": {
                "type": PASCAL_TYPES[c["event_type"][index]],
                "data": Raw(c["data"][index]),
            },
            "metadata": Raw(c["metadata"][index]),
            "context": Raw(c["context"][index]),
        }


class LiveFeed:
    """``IngestService.listeners`` callable: count activity, publish events to subscribers."""

    def __init__(self, bus: LiveBus, activity: ActivityTracker) -> None:
        self.bus = bus
        self.activity = activity

    def __call__(self, rows: EventRows) -> None:
        project_id = rows.project_id
        self.activity.record(project_id, rows.columns["user_id"], len(rows))
        if self.bus.has_subscribers(project_id, "events"):
            self.bus.publish_many(project_id, "events", EventView(rows))
