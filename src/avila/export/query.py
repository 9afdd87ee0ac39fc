"""What an export selects: the request model, its filters compiled to SQL, the exported columns.

Untrusted input never reaches SQL as text: values are parameters and property paths go through
the analytics allow-list (:func:`avila.analytics.common.property_expr`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import pyarrow as pa
from msgspec import Meta, Struct

from avila.analytics.common import filter_expr, invalid, naive_utc
from avila.errors import MalformedJSON, ValidationFailed
from avila.schemas.analytics import FilterValue, PropertyFilter, PropertyPath
from avila.schemas.messages import split_msgspec_error
from avila.storage.base import Store
from avila.storage.schema import EVENT_COLUMNS, EVENT_TYPES, TIMESTAMP_COLUMNS

ExportFormatName = Literal["csv", "json", "ndjson", "parquet"]
#: Most ids one ``user_ids`` / ``event_types`` filter may list.
MAX_FILTER_VALUES = 10_000

#: Stored columns that an export leaves out (the caller's project is implied by the key).
_OMITTED = {"project_id"}
#: Stored column -> exported name (the seed's event calls the client time ``timestamp``).
_RENAMED = {"ts": "timestamp"}

#: ``(exported name, stored column, Arrow type, description)`` in file order.
EXPORT_COLUMNS: tuple[tuple[str, str, pa.DataType, str], ...] = tuple(
    (_RENAMED.get(name, name), name, dtype, help)
    for name, dtype, help in EVENT_COLUMNS
    if name not in _OMITTED
)
#: Exported names of the timestamp columns (UTC, microseconds).
EXPORT_TIMESTAMPS = frozenset(_RENAMED.get(n, n) for n in TIMESTAMP_COLUMNS)
#: Exported names of the columns holding JSON text.
EXPORT_JSON_COLUMNS = ("data", "metadata", "context")
#: Arrow schema of the rows a query returns (timestamps naive UTC, as stored).
EXPORT_SCHEMA = pa.schema([pa.field(name, dtype) for name, _, dtype, _ in EXPORT_COLUMNS])

IdList = Annotated[
    list[Annotated[str, Meta(min_length=1, max_length=256)]], Meta(max_length=MAX_FILTER_VALUES)
]


class ExportFilters(Struct, forbid_unknown_fields=True):
    """All optional; an absent filter selects everything. ``start_time``/``end_time`` bound
    the event time ``timestamp`` as the half-open range ``[start_time, end_time)``."""

    user_ids: IdList | None = None
    event_types: IdList | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    #: ``{"context.device.browser": "Chrome", "country": ["BR", "PT"]}`` (equality; a list
    #: means any of) or the analytics filter list ``[{"property", "operator", "value"}]``.
    properties: dict[PropertyPath, FilterValue] | list[PropertyFilter] | None = None


class ExportRequest(Struct, forbid_unknown_fields=True):
    """The seed's body: ``{"format": "csv", "filters": {...}}``."""

    format: ExportFormatName
    filters: ExportFilters = msgspec.field(default_factory=ExportFilters)


_DECODER = msgspec.json.Decoder(ExportRequest)


def parse_request(body: bytes) -> ExportRequest:
    """Decode a request body; MalformedJSON (400) or ValidationFailed (422) naming the field."""
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        message, path = split_msgspec_error(exc, "")
        raise ValidationFailed(
            f"export request does not match the schema: {message}",
            details=[{"path": path.lstrip(".") or "$", "message": message}],
        ) from None
    except msgspec.DecodeError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None


def _event_type(name: str, where: str) -> str:
    if name in EVENT_TYPES:
        return EVENT_TYPES[name]
    if name in EVENT_TYPES.values():
        return name
    raise invalid(
        "unknown_event_type",
        where,
        f"unknown event type {name!r}; expected one of {', '.join(EVENT_TYPES)} "
        "(or their snake_case names)",
    )


def _property_filters(properties: Any) -> list[PropertyFilter]:
    if properties is None:
        return []
    if isinstance(properties, list):
        return properties
    return [
        PropertyFilter(path, "in" if isinstance(value, list) else "eq", value)
        for path, value in properties.items()
    ]


def _utc_bound(value: datetime) -> datetime:
    """``value`` as naive UTC. An offset may move a time at the calendar's ends past them
    (``0001-01-01T00:00:00+01:00`` is in year 0), which no datetime holds (it raised, a 500):
    such a bound is the calendar's first or last instant, before or after every stored event
    time, so it selects what the range means."""
    try:
        return naive_utc(value)
    except OverflowError:
        return datetime.min if value.year == 1 else datetime.max


@dataclass(frozen=True)
class ExportQuery:
    sql: str
    params: tuple[Any, ...]


def build_query(store: Store, project_id: str, filters: ExportFilters) -> ExportQuery:
    """The SELECT of an export (rows in storage order: receive order, but by user and time on
    finished days the loader has ordered, :mod:`avila.storage.event_order`).

    Raises ValidationFailed (422) for unknown event types, property paths or bad ranges. May
    query the store (regex checks), so call it off the event loop.
    """
    parts = ["project_id = ?"]
    params: list[Any] = [project_id]
    start = _utc_bound(filters.start_time) if filters.start_time else None
    end = _utc_bound(filters.end_time) if filters.end_time else None
    if start is not None and end is not None and end <= start:
        raise invalid("invalid_time_range", "filters.end_time", "end_time must be after start_time")
    if start is not None:
        parts.append("ts >= ?")
        params.append(start)
    if end is not None:
        parts.append("ts < ?")
        params.append(end)
    if filters.user_ids is not None:
        if not filters.user_ids:
            raise invalid("invalid_filter", "filters.user_ids", "give at least one user id")
        parts.append(f"user_id IN ({', '.join('?' for _ in filters.user_ids)})")
        params.extend(filters.user_ids)
    if filters.event_types is not None:
        if not filters.event_types:
            raise invalid("invalid_filter", "filters.event_types", "give at least one event type")
        types = [
            _event_type(t, f"filters.event_types[{i}]") for i, t in enumerate(filters.event_types)
        ]
        parts.append(f"event_type IN ({', '.join('?' for _ in types)})")
        params.extend(types)
    for i, flt in enumerate(_property_filters(filters.properties)):
        where = (
            f"filters.properties[{i}]"
            if isinstance(filters.properties, list)
            else f"filters.properties.{flt.property}"
        )
        expr = filter_expr(store, flt, where)
        parts.append(expr.sql)
        params.extend(expr.params)
    select = ", ".join(
        f'{stored} AS "{name}"' if name != stored else name for name, stored, _, _ in EXPORT_COLUMNS
    )
    return ExportQuery(f"SELECT {select} FROM events WHERE {' AND '.join(parts)}", tuple(params))
