"""Turn an imported row into the seed's event JSON (bytes): a seed-shaped object as it is, a
flat row as our exports write it rebuilt into ``event_type``/``data``/``context`` (from the JSON
columns, or else from the flat columns ``url``, ``product_id``, ``browser`` ...)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from avila.storage.schema import EVENT_TYPES

_PASCAL = {snake: pascal for pascal, snake in EVENT_TYPES.items()}

#: Flat column -> field of ``event_type.data``, per event type (the inverse of the stored
#: flattening in :mod:`avila.ingest.validation`).
DATA_FIELDS: dict[str, dict[str, str]] = {
    "PageView": {"url": "url", "title": "title"},
    "Click": {"url": "url"},
    "Search": {"search_query": "query"},
    "ProductView": {"product_id": "product_id", "quantity": "quantity", "price": "price"},
    "AddToCart": {"product_id": "product_id", "quantity": "quantity", "price": "price"},
    "RemoveFromCart": {"product_id": "product_id", "quantity": "quantity", "price": "price"},
    "Purchase": {"order_id": "order_id", "revenue": "revenue", "currency": "currency"},
    "Checkout": {"revenue": "cart_value", "currency": "currency"},
    "Custom": {"event_name": "name"},
}
_DEVICE = ("device_type", "os", "browser")
_LOCATION = ("country", "city")

_encode = msgspec.json.Encoder().encode


def _time_text(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, str) and len(value) > 10 and value[10] == " ":
        return value[:10] + "T" + value[11:]  # "2025-11-26 10:00:00Z" (pandas, DuckDB) -> RFC 3339
    return value


#: What a flat column's NaN or infinity becomes in the event: JSON has no such number (msgspec
#: would write ``null``, silently dropping the value); ``1e999`` is the one way JSON can say it,
#: and the API refuses it ("Number out of range") at the field's path, as it refuses it sent.
_NOT_FINITE = msgspec.Raw(b"1e999")


def _flat_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _NOT_FINITE
    return value


def _json_part(value: Any) -> Any:
    """A JSON column's value: text embedded as is (validation parses it), objects kept."""
    if isinstance(value, str):
        return msgspec.Raw(value) if value.strip() else None
    return value


def flat_data(type_name: Any, row: dict[str, Any]) -> dict[str, Any]:
    """``event_type.data`` of a flat row without a ``data`` part, from its flat columns."""
    data = {
        name: _flat_value(row[column])
        for column, name in DATA_FIELDS.get(str(type_name), {}).items()
        if row.get(column) is not None
    }
    if type_name == "Custom" and row.get("properties") is not None:
        data["properties"] = _json_part(row["properties"])
    return data


def flat_context(row: dict[str, Any]) -> dict[str, Any]:
    """``context`` of a flat row without a ``context`` part, from its flat columns."""
    device = {k: _flat_value(row[k]) for k in _DEVICE if row.get(k) is not None}
    location = {k: _flat_value(row[k]) for k in _LOCATION if row.get(k) is not None}
    return {
        k: v
        for k, v in (
            ("device", device or None),
            ("location", location or None),
            ("referrer", _flat_value(row.get("referrer"))),
            ("user_agent", _flat_value(row.get("user_agent"))),
        )
        if v is not None
    }


#: The flat columns :func:`flat_data` and :func:`flat_context` read.
FLAT_PART_COLUMNS = frozenset(
    {column for fields in DATA_FIELDS.values() for column in fields}
    | {"properties", *_DEVICE, *_LOCATION, "referrer", "user_agent"}
)


def flat_part_texts(
    rows: list[dict[str, Any]], type_names: list[str], data: np.ndarray, context: np.ndarray
) -> tuple[list[str], list[str]]:
    """The JSON texts :func:`row_to_event` would embed as ``data`` for the rows that ``data``
    marks and as ``context`` for those ``context`` marks (each list in row order over its
    marked rows), so the import's column-wise path stores what the per-event path would."""
    data_texts = [_encode(flat_data(type_names[i], rows[i])).decode() for i in np.flatnonzero(data)]
    context_texts = [_encode(flat_context(rows[i])).decode() for i in np.flatnonzero(context)]
    return data_texts, context_texts


def row_to_event(row: dict[str, Any]) -> bytes:
    """The seed's event JSON for a flat (exported) row or a seed-shaped object."""
    event_type = row.get("event_type")
    if isinstance(event_type, dict):
        return _encode(row)
    type_name = _PASCAL.get(event_type, event_type) if isinstance(event_type, str) else event_type
    data = _json_part(row.get("data"))
    if data is None:
        data = flat_data(type_name, row)
    context = _json_part(row.get("context"))
    if context is None:
        context = flat_context(row)
    event: dict[str, Any] = {
        "user_id": row.get("user_id"),
        "event_type": {"type": type_name, "data": data},
        "context": context,
    }
    for name in ("event_id", "session_id"):
        if row.get(name) is not None:
            event[name] = row[name]
    timestamp = row.get("timestamp", row.get("ts"))
    if timestamp is not None:
        event["timestamp"] = _time_text(timestamp)
    metadata = _json_part(row.get("metadata"))
    if metadata is not None:
        event["metadata"] = metadata
    return _encode(event)


class _JsonParts(msgspec.Struct):
    """The JSON parts of a flat NDJSON line (an NDJSON export) as the line's own bytes."""

    data: msgspec.Raw = msgspec.Raw(b"")  # empty: the key is absent
    metadata: msgspec.Raw = msgspec.Raw(b"")
    context: msgspec.Raw = msgspec.Raw(b"")


_JSON_PARTS = msgspec.json.Decoder(_JsonParts)


def with_json_bytes(line: bytes, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (the decoded flat NDJSON ``line``) with its object-valued ``data``,
    ``metadata`` and ``context`` replaced by their bytes in the line: an NDJSON export embeds
    the stored JSON texts as they are, so the import stores them byte for byte (spacing,
    ``\\u`` escapes, number spelling), as the API keeps a client's JSON, instead of a compact
    re-encoding of the decoded objects. Only lines with such an object pay the second decode."""
    if not any(isinstance(row.get(name), dict) for name in ("data", "metadata", "context")):
        return row
    parts = _JSON_PARTS.decode(line)
    for name in ("data", "metadata", "context"):
        raw = getattr(parts, name)
        if len(raw) and isinstance(row.get(name), dict):
            row[name] = raw
    return row
