"""Validate raw events and flatten them into stored columns.

Each event is decoded on its own so one bad event rejects only itself (partial acceptance);
rejections carry the JSON path of the bad field relative to the request body.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pyarrow as pa

from avila.schemas.events import (
    CONTEXT_DECODER,
    DATA_DECODERS,
    ENVELOPE_DECODER,
    Context,
)
from avila.storage.schema import EVENT_COLUMN_NAMES, EVENT_TYPES, ColumnBatch, columns_to_arrow

MAX_EVENT_BYTES = 32 * 1024
MAX_FUTURE = timedelta(hours=1)

_MISSING = re.compile(r"^Object missing required field `([^`]*)`$")
_PATH = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)


@dataclass(frozen=True)
class Rejection:
    """Why the event at ``index`` of the request was not accepted."""

    index: int
    code: str
    message: str
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": self.message, "path": self.path}


def split_msgspec_error(
    exc: msgspec.ValidationError | msgspec.DecodeError, prefix: str
) -> tuple[str, str]:
    """``("message", "prefix.field[2].x")`` from a msgspec error."""
    text = str(exc)
    match = _PATH.match(text)
    message, path = (
        (match.group("message"), prefix + match.group("path")) if match else (text, prefix)
    )
    missing = _MISSING.match(message)
    if missing:  # point at the missing field itself, not at its parent object
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return message, path


_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


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
    (the body of ``POST /api/v1/events`` holds one event, not a list). ``received_at`` (UTC) fills missing timestamps; events more than one hour after it are
    rejected with ``timestamp_in_future``. Missing event ids get a fresh UUID4.
    """
    now = _utc_naive(received_at or datetime.now(UTC))
    rows = EventRows(project_id, now)
    rejected: list[Rejection] = []
    cols = rows.columns
    latest_allowed = now + MAX_FUTURE
    decode_envelope = ENVELOPE_DECODER.decode
    decode_context = CONTEXT_DECODER.decode

    for index, raw in enumerate(raws):
        env = None
        prefix = path_prefix if single else f"{path_prefix}[{index}]"
        if len(raw) > MAX_EVENT_BYTES:
            rejected.append(
                Rejection(
                    index,
                    "event_too_large",
                    f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}",
                    prefix,
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
            ctx = decode_context(context_raw) if context_raw != b"null" else None
            metadata_raw = bytes(env.metadata)
            if metadata_raw[:1] not in (b"{", b"n"):
                rejected.append(
                    Rejection(
                        index, "invalid_event", "Expected `object | null`", f"{prefix}.metadata"
                    )
                )
                continue
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            # Envelope errors carry their own path; data/context errors are relative to the part.
            inner = prefix if "env" not in locals() or env is None else prefix + part
            message, path = split_msgspec_error(exc, inner)
            rejected.append(Rejection(index, "invalid_event", message, path))
            continue
        ts = _utc_naive(env.timestamp) if env.timestamp is not None else now
        if ts > latest_allowed:
            rejected.append(
                Rejection(
                    index,
                    "timestamp_in_future",
                    f"timestamp {ts.isoformat()}Z is more than 1 h after the server time",
                    f"{prefix}.timestamp",
                )
            )
            continue
        rows.indexes.append(index)
        cols["event_id"].append(env.event_id or str(uuid.uuid4()))
        cols["user_id"].append(env.user_id)
        cols["session_id"].append(env.session_id)
        cols["ts"].append((ts - _EPOCH) // _US)
        cols["event_type"].append(EVENT_TYPES[etype])
        _flatten_data(cols, etype, data)
        _flatten_context(cols, ctx)
        cols["data"].append(bytes(data_raw).decode())
        cols["metadata"].append(metadata_raw.decode() if metadata_raw != b"null" else "{}")
        cols["context"].append(context_raw.decode() if context_raw != b"null" else "{}")
    return rows, rejected


def _flatten_data(cols: dict[str, list[Any]], etype: str, data: Any) -> None:
    url = title = product_id = order_id = name = query = currency = None
    revenue = price = None
    quantity = None
    if etype == "PageView":
        url, title = data.url, data.title
    elif etype == "Click":
        url = data.url
    elif etype == "Search":
        query = data.query
    elif etype in ("ProductView", "AddToCart", "RemoveFromCart"):
        product_id, quantity, price = data.product_id, data.quantity, data.price
    elif etype == "Purchase":
        order_id, revenue, currency = data.order_id, data.revenue, data.currency
    elif etype == "Checkout":
        revenue, currency = data.cart_value, data.currency
    elif etype == "Custom":
        name = data.name
    cols["url"].append(url)
    cols["title"].append(title)
    cols["product_id"].append(product_id)
    cols["order_id"].append(order_id)
    cols["event_name"].append(name)
    cols["search_query"].append(query)
    cols["revenue"].append(revenue)
    cols["currency"].append(currency)
    cols["quantity"].append(quantity)
    cols["price"].append(price)


def _flatten_context(cols: dict[str, list[Any]], ctx: Context | None) -> None:
    device = ctx.device if ctx else None
    location = ctx.location if ctx else None
    cols["device_type"].append(device.device_type if device else None)
    cols["os"].append(device.os if device else None)
    cols["browser"].append(device.browser if device else None)
    cols["country"].append(location.country if location else None)
    cols["city"].append(location.city if location else None)
    cols["referrer"].append(ctx.referrer if ctx else None)
    cols["user_agent"].append(ctx.user_agent if ctx else None)
