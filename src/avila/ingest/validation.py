"""Validate raw events and flatten them into stored columns.

Each event is decoded on its own so one bad event rejects only itself (partial acceptance);
rejections carry the JSON path of the bad field relative to the request body.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pyarrow as pa

from avila.schemas.events import (
    CONTEXT_DECODER,
    DATA_DECODERS,
    DATA_TYPES,
    ENVELOPE_DECODER,
    Context,
    EventEnvelope,
)
from avila.schemas.messages import join_path, split_msgspec_error
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_TYPES, ColumnBatch, columns_to_arrow

MAX_EVENT_BYTES = 32 * 1024
MAX_FUTURE = timedelta(hours=1)
#: msgspec decodes recursively; JSON nested deeper than Python's recursion limit cannot be read.
NESTED_TOO_DEEPLY = "JSON is nested too deeply to decode"


@dataclass(frozen=True)
class Rejection:
    """Why the event at ``index`` of the request was not accepted."""

    index: int
    code: str
    message: str
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": self.message, "path": self.path}


_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# The earliest event time that is a date in UTC: 0001-01-01T00:00:00+05:45 is in year 0, which
# no Python date (the loader's rollups, every read) can hold.
_EARLIEST_US = (datetime(1, 1, 1) - _EPOCH) // _US


def _utc_text(ts_us: int) -> str:
    """``2024-03-01T12:00:00Z`` for epoch microseconds (which may be past year 9999)."""
    try:
        return f"{_EPOCH + ts_us * _US:%Y-%m-%dT%H:%M:%S}Z"
    except OverflowError:
        return "a time after 9999-12-31T23:59:59Z"


def _utc_naive(ts: datetime) -> datetime:
    offset = ts.utcoffset()
    if offset is None:
        return ts
    return (ts - offset).replace(tzinfo=None)


def epoch_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch of a naive-UTC datetime."""
    return (ts - _EPOCH) // _US


# Columns with one value per request, filled in by EventRows.to_columns.
_PER_BATCH = frozenset({"project_id", "received_at"})


@dataclass
class EventRows:
    """Validated events as column lists, ready to become one Arrow table."""

    project_id: str
    received_at: datetime
    columns: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in EVENT_COLUMN_NAMES}
    )
    indexes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indexes)

    @property
    def event_ids(self) -> list[str]:
        return self.columns["event_id"]

    def keep(self, positions: list[int]) -> EventRows:
        """A copy holding only the rows at ``positions`` (0-based into this object)."""
        kept = EventRows(self.project_id, self.received_at)
        for name, values in self.columns.items():
            if name not in _PER_BATCH:
                kept.columns[name] = [values[p] for p in positions]
        kept.indexes = [self.indexes[p] for p in positions]
        return kept

    def to_columns(self) -> ColumnBatch:
        """All stored columns (timestamps in epoch microseconds)."""
        n = len(self.indexes)
        columns = dict(self.columns)
        columns["project_id"] = [self.project_id] * n
        columns["received_at"] = [epoch_us(self.received_at)] * n
        return columns

    def to_arrow(self) -> pa.Table:
        return columns_to_arrow([self.to_columns()])


def validate_events(
    raws: list[msgspec.Raw | bytes],
    project_id: str,
    *,
    path_prefix: str = "events",
    single: bool = False,
    received_at: datetime | None = None,
) -> tuple[EventRows, list[Rejection]]:
    """Decode and validate each raw event; returns accepted rows and per-index rejections.

    Rejection paths are ``{path_prefix}[i].field``, or ``{path_prefix}.field`` when ``single``
    (the body of ``POST /api/v1/events`` holds one event, not a list). ``received_at`` (UTC)
    fills missing timestamps; events more than one hour after it are rejected with
    ``timestamp_in_future``. Missing event ids get a fresh UUID4.
    """
    now = _utc_naive(received_at or datetime.now(UTC))
    now_us = epoch_us(now)
    latest_allowed_us = epoch_us(now + MAX_FUTURE)
    rows = EventRows(project_id, now)
    rejected: list[Rejection] = []
    # One tuple per accepted event, transposed into columns at the end: far cheaper on this
    # hot path than 25 list appends per event.
    records: list[tuple[Any, ...]] = []
    indexes = rows.indexes
    decode_envelope = ENVELOPE_DECODER.decode
    decode_context = CONTEXT_DECODER.decode

    # A valid context's raw JSON -> (its flattened columns, its text), for this call: the events
    # of one batch usually share a context (one device, location and user agent per client), and
    # decoding it was the largest single cost of validating an event (~1 of ~4 us,
    # benchmarks/RESULTS.md). Only contexts that passed every check are kept. Per call, not per
    # process: a process-wide cache measured ~1 us/event slower when contexts never repeat.
    contexts: dict[bytes, tuple[tuple[Any, ...], str]] = {}
    for index, raw in enumerate(raws):
        env = None
        etype = ""
        if len(raw) > MAX_EVENT_BYTES:
            rejected.append(
                Rejection(
                    index,
                    "event_too_large",
                    f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}",
                    path_prefix if single else f"{path_prefix}[{index}]",
                )
            )
            continue
        try:
            env = decode_envelope(raw)
            part = ".event_type.data"
            etype = env.event_type.type
            data_raw = env.event_type.data
            data = DATA_DECODERS[etype].decode(data_raw)
            part = ".context"
            context_raw = bytes(env.context)
            known = contexts.get(context_raw)
            if known is None:
                ctx = decode_context(context_raw) if context_raw != b"null" else None
            metadata_raw = bytes(env.metadata)
        except RecursionError:
            prefix = path_prefix if single else f"{path_prefix}[{index}]"
            path = prefix if env is None else join_path(prefix, part)
            rejected.append(Rejection(index, "invalid_event", NESTED_TOO_DEEPLY, path))
            continue
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            # Envelope errors carry their own path; data/context errors are relative to the part.
            prefix = path_prefix if single else f"{path_prefix}[{index}]"
            if env is None:
                message, path = split_msgspec_error(exc, prefix, EventEnvelope)
            else:
                root = DATA_TYPES[etype] if part == ".event_type.data" else Context
                message, path = split_msgspec_error(exc, join_path(prefix, part), root)
            rejected.append(Rejection(index, "invalid_event", message, path))
            continue
        if metadata_raw[:1] not in (b"{", b"n"):
            prefix = path_prefix if single else f"{path_prefix}[{index}]"
            rejected.append(
                Rejection(
                    index,
                    "invalid_event",
                    "Expected `object | null`",
                    join_path(prefix, "metadata"),
                )
            )
            continue
        # msgspec checks UTF-8 only in the fields it decodes; the raw JSON it keeps (data,
        # metadata) or skips (unknown context keys) is checked here, per part.
        try:
            part = "event_type.data"
            data_text = bytes(data_raw).decode()
            part = "metadata"
            metadata_text = metadata_raw.decode() if metadata_raw != b"null" else "{}"
            if known is None:
                part = "context"
                known = (
                    _flatten_context(ctx) if ctx is not None else _NO_CONTEXT,
                    context_raw.decode() if ctx is not None else "{}",
                )
                contexts[context_raw] = known
        except UnicodeDecodeError:
            prefix = path_prefix if single else f"{path_prefix}[{index}]"
            rejected.append(
                Rejection(
                    index, "invalid_event", "Invalid UTF-8 encoded string", join_path(prefix, part)
                )
            )
            continue
        stamp = env.timestamp
        if stamp is None:
            ts_us = now_us
        else:
            ts_us = (stamp - (_EPOCH if stamp.tzinfo is None else _EPOCH_UTC)) // _US
            if ts_us < _EARLIEST_US:
                prefix = path_prefix if single else f"{path_prefix}[{index}]"
                rejected.append(
                    Rejection(
                        index,
                        "invalid_event",
                        "timestamp is before 0001-01-01T00:00:00Z in UTC",
                        join_path(prefix, "timestamp"),
                    )
                )
                continue
            if ts_us > latest_allowed_us:
                prefix = path_prefix if single else f"{path_prefix}[{index}]"
                rejected.append(
                    Rejection(
                        index,
                        "timestamp_in_future",
                        f"timestamp {_utc_text(ts_us)} is more than 1 h after the server time",
                        join_path(prefix, "timestamp"),
                    )
                )
                continue
        indexes.append(index)
        records.append(
            (
                env.event_id or str(uuid.uuid4()),
                env.user_id,
                env.session_id,
                ts_us,
                EVENT_TYPES[etype],
                *_FLATTEN_DATA[etype](data),
                *known[0],
                data_text,
                metadata_text,
                known[1],
            )
        )
    if records:
        columns = rows.columns
        for name, values in zip(_RECORD_COLUMNS, zip(*records, strict=True), strict=True):
            columns[name] = list(values)
    return rows, rejected


# Order of the values in one validated record (every stored column but the per-batch ones).
_RECORD_COLUMNS = (
    "event_id", "user_id", "session_id", "ts", "event_type",
    "url", "title", "product_id", "order_id", "event_name", "search_query",
    "revenue", "currency", "quantity", "price",
    "device_type", "os", "browser", "country", "city", "referrer", "user_agent",
    "data", "metadata", "context",
)  # fmt: skip

# event_type.data -> (url, title, product_id, order_id, event_name, search_query, revenue,
# currency, quantity, price), per type. Checkout's cart_value is stored as revenue.
_NONE10: tuple[None, ...] = (None,) * 10
_FLATTEN_DATA: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    "PageView": lambda d: (d.url, d.title, None, None, None, None, None, None, None, None),
    "Click": lambda d: (d.url, None, None, None, None, None, None, None, None, None),
    "Search": lambda d: (None, None, None, None, None, d.query, None, None, None, None),
    "ProductView": lambda d: (None, None, d.product_id, None, None, None, None, None, d.quantity, d.price),
    "AddToCart": lambda d: (None, None, d.product_id, None, None, None, None, None, d.quantity, d.price),
    "RemoveFromCart": lambda d: (None, None, d.product_id, None, None, None, None, None, d.quantity, d.price),
    "Checkout": lambda d: (None, None, None, None, None, None, d.cart_value, d.currency, None, None),
    "Purchase": lambda d: (None, None, None, d.order_id, None, None, d.revenue, d.currency, None, None),
    "Custom": lambda d: (None, None, None, None, d.name, None, None, None, None, None),
}  # fmt: skip
for _name in EVENT_TYPES:
    _FLATTEN_DATA.setdefault(_name, lambda d: _NONE10)

_NO_CONTEXT: tuple[None, ...] = (None,) * 7


def _flatten_context(ctx: Context) -> tuple[Any, ...]:
    """(device_type, os, browser, country, city, referrer, user_agent)."""
    device, location = ctx.device, ctx.location
    return (
        device.device_type if device else None,
        device.os if device else None,
        device.browser if device else None,
        location.country if location else None,
        location.city if location else None,
        ctx.referrer,
        ctx.user_agent,
    )
