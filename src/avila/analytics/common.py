"""Shared pieces of the analytics queries: query parsing, time ranges, property paths, event
conditions and filters compiled to parameterised SQL (time zones and calendar buckets are in
:mod:`avila.analytics.calendar`).

Untrusted input never reaches SQL as text. Column names come from :data:`PROPERTY_COLUMNS`
(an allow-list); JSON properties are read with the backend's JSON function and the JSONPath is
bound as a parameter after matching :data:`_JSON_KEY_PATH`. Values are always parameters.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avila.errors import ValidationFailed
from avila.schemas.analytics import EventCondition, PropertyFilter
from avila.storage.base import Store
from avila.storage.schema import EVENT_TYPES

Q = TypeVar("Q", bound=msgspec.Struct)

DEFAULT_RANGE = timedelta(days=30)
#: Breakdown label of the values outside the top N.
OTHER = "Other"
#: Key the values outside the top N are merged under before they are labelled :data:`OTHER`:
#: no stored value equals it, so a value that is itself the text "Other" stays apart.
REST: Any = object()
US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND

#: Stored (snake_case) event types a condition may name.
CONDITION_TYPES: frozenset[str] = frozenset(EVENT_TYPES.values())

#: The column a condition's ``condition_value`` is matched against, per event type.
KEY_FIELDS: dict[str, str] = {
    "page_view": "url",
    "click": "url",
    "product_view": "product_id",
    "add_to_cart": "product_id",
    "remove_from_cart": "product_id",
    "custom": "event_name",
    "search": "search_query",
    "purchase": "order_id",
}

_NUMERIC = {"revenue", "price", "quantity"}
_COLUMNS = [
    "event_type",
    "user_id",
    "session_id",
    "url",
    "title",
    "product_id",
    "order_id",
    "event_name",
    "search_query",
    "revenue",
    "currency",
    "quantity",
    "price",
    "device_type",
    "os",
    "browser",
    "country",
    "city",
    "referrer",
    "user_agent",
]

#: Public property paths -> stored column. Short names (``browser``) are accepted too.
PROPERTY_COLUMNS: dict[str, str] = {name: name for name in _COLUMNS}
PROPERTY_COLUMNS.update(
    {
        "context.device.device_type": "device_type",
        "context.device.type": "device_type",
        "context.device.os": "os",
        "context.device.browser": "browser",
        "context.location.country": "country",
        "context.location.city": "city",
        "context.referrer": "referrer",
        "context.user_agent": "user_agent",
        "event_type.type": "event_type",
        "event_type.data.url": "url",
        "event_type.data.title": "title",
        "event_type.data.product_id": "product_id",
        "event_type.data.order_id": "order_id",
        "event_type.data.name": "event_name",
        "event_type.data.query": "search_query",
        "event_type.data.search_query": "search_query",
        "event_type.data.revenue": "revenue",
        "event_type.data.currency": "currency",
        "event_type.data.quantity": "quantity",
        "event_type.data.price": "price",
        "name": "event_name",
    }
)
#: Prefixes of paths read from the JSON text columns.
_JSON_PREFIXES: tuple[tuple[str, str], ...] = (
    ("event_type.data.", "data"),
    ("properties.", "data"),  # shorthand for event_type.data.properties.*
    ("metadata.", "metadata"),
    ("context.", "context"),
)
_JSON_KEY_PATH = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}(\.[A-Za-z_][A-Za-z0-9_\-]{0,63}){0,7}$"
)


def fragments(store: Store) -> dict[str, str]:
    """The SQL fragment table of the store's backend (``avila.storage.<backend>.analytics_sql``)."""
    module = importlib.import_module(f"avila.storage.{store.backend}.analytics_sql")
    table: dict[str, str] = module.FRAGMENTS
    return table


def events_source(store: Store, project_id: str) -> str:
    """The relation every analytics query of ``project_id`` reads events from:
    ``FRAGMENTS["events_source"]`` (DuckDB: a join with the materialised person map), or
    ``FRAGMENTS["events_unstitched"]`` when the backend's ``stitching_probe`` finds no identity
    link in the project (so projects that never identify anyone do not pay for resolving ids),
    or ``FRAGMENTS["events_resolved"]`` (the recursive resolution) when the probe says the
    project's person map is not current (:mod:`avila.storage.person_map`)."""
    frag = fragments(store)
    probe = frag.get("stitching_probe", "")
    if not probe:
        return frag["events_source"]
    rows = store.query(probe, [project_id])
    if not rows:
        return frag["events_unstitched"]
    return frag["events_source"] if rows[0][0] else frag["events_resolved"]


def names_the_user(flt: PropertyFilter) -> bool:
    """Whether ``flt`` reads ``user_id``: the one column in which the stitched relation
    (:func:`events_source`) differs from the events table."""
    return PROPERTY_COLUMNS.get(flt.property) == "user_id"


def rows_at_most(
    store: Store,
    project_id: str,
    start: datetime | None,
    end: datetime | None,
    filters: Sequence[PropertyFilter] = (),
) -> int:
    """An upper bound of the rows :func:`events_source` holds for ``project_id`` in
    ``[start, end)`` under ``filters``, counted on the events table: the stitched relation is
    that table joined one to one with the person map, so it has the same rows and only their
    ``user_id`` differs. A filter on ``user_id`` is left out (a superset). Readers size their
    slices by it; counting through the join cost 0.18 s of a 2.4 s stitched funnel at 100 M
    events (benchmarks/RESULTS.md, "The stitched funnel's row count")."""
    kept = [f for f in filters if not names_the_user(f)]
    where = where_clause(store, project_id, start, end, kept)
    table = fragments(store)["events_unstitched"]
    ((rows,),) = store.query(f"SELECT count(*) FROM {table} WHERE {where.sql}", where.params)
    return int(rows)


def persons_relation(store: Store, source: str) -> str:
    """The relation ``(project_id, anonymous_id, user_id)`` that resolves ids the way the
    events relation ``source`` (from :func:`events_source`) does: the person map behind
    ``events_source``, the recursive ``identity_resolved`` view otherwise."""
    frag = fragments(store)
    mapped = store.backend == "duckdb" and source == frag["events_source"]
    return "person_map" if mapped else "identity_resolved"


def invalid(code: str, path: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=[{"path": path, "message": message}])


_MSGSPEC_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def parse_query(model: type[Q], query: Q | Mapping[str, Any] | None) -> Q:
    """``query`` as a ``model`` instance; dicts are converted (RFC 3339 strings to datetimes).

    Raises ValidationFailed(code="invalid_query") naming the bad field's path.
    """
    if isinstance(query, model):
        return query
    try:
        return msgspec.convert(dict(query or {}), model)  # type: ignore[arg-type]
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = _MSGSPEC_PATH.search(text)
        path = found.group("path").lstrip(".") if found else ""
        message = text[: found.start()] if found else text
        raise invalid("invalid_query", path, message) from exc


def naive_utc(value: datetime) -> datetime:
    """UTC wall time without tzinfo (how ``ts`` is stored); naive input is taken as UTC."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC text for a naive UTC datetime (``2024-01-02T03:04:05.123456Z``)."""
    if value is None:
        return None
    return naive_utc(value).isoformat() + "Z"


#: Longest range one query may span: per-day series stay bounded (10 years of days).
MAX_RANGE = timedelta(days=3660)
#: The instants a query may name (``start_time``, ``end_time``, ``reference_date``...): two days
#: inside what a ``datetime`` can hold, so every report's margins (local time in any zone, the
#: scan windows of lifecycle and stickiness) stay representable. Before, a time at either end
#: (``0001-01-01T00:00:00+14:00``, ``9999-12-31T23:59:59-12:00``) overflowed into a 500.
EARLIEST_QUERY_TIME = datetime(1, 1, 3)
LATEST_QUERY_TIME = datetime(9999, 12, 30)


def query_time(value: datetime, path: str) -> datetime:
    """``value`` as naive UTC; ValidationFailed(code="invalid_time_range") at ``path`` when it
    is outside [:data:`EARLIEST_QUERY_TIME`, :data:`LATEST_QUERY_TIME`]."""
    try:
        moment: datetime | None = naive_utc(value)
    except OverflowError:  # an offset that moves it past year 1 or 9999
        moment = None
    if moment is None or not EARLIEST_QUERY_TIME <= moment <= LATEST_QUERY_TIME:
        raise invalid(
            "invalid_time_range",
            path,
            f"{path} must be between {iso(EARLIEST_QUERY_TIME)} and {iso(LATEST_QUERY_TIME)}",
        )
    return moment


def shifted(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, saturating at ``datetime.min`` / ``datetime.max`` (scan margins)."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max if delta > timedelta(0) else datetime.min


def time_range(
    start: datetime | None, end: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """Half-open ``[start, end)`` as naive UTC; defaults to the 30 days before ``now``."""
    end_v = query_time(end, "end_time") if end is not None else (now or utcnow())
    if start is not None:
        start_v = query_time(start, "start_time")
    else:
        start_v = max(shifted(end_v, -DEFAULT_RANGE), EARLIEST_QUERY_TIME)
    if end_v <= start_v:
        raise invalid("invalid_time_range", "end_time", "end_time must be after start_time")
    if end_v - start_v > MAX_RANGE:
        days = (end_v - start_v).days
        raise invalid(
            "time_range_too_long",
            "start_time",
            f"the time range is {days:,} days; the limit is {MAX_RANGE.days:,} days",
        )
    return start_v, end_v


def zone(name: str, path: str = "timezone") -> ZoneInfo:
    """The IANA time zone ``name``; ValidationFailed(code="unknown_timezone") otherwise."""
    try:
        if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise invalid("unknown_timezone", path, f"unknown IANA time zone {name!r}") from exc


@dataclass(frozen=True)
class Expr:
    """A SQL expression with its positional parameters."""

    sql: str
    params: tuple[Any, ...] = ()
    numeric: bool = False


def _json_string(store: Store, depth: int) -> str:
    """The ``json_string`` fragment, or the backend's ``json_string_at_depth(depth)`` when it
    has one (ClickHouse: its JSON functions take the keys as separate arguments)."""
    module = importlib.import_module(f"avila.storage.{store.backend}.analytics_sql")
    at_depth: Callable[[int], str] | None = getattr(module, "json_string_at_depth", None)
    return at_depth(depth) if at_depth is not None else fragments(store)["json_string"]


def property_expr(store: Store, path: str, where: str) -> Expr:
    """The SQL for a property path; ValidationFailed(code="unknown_property") if not allowed."""
    column = PROPERTY_COLUMNS.get(path)
    if column is not None:
        return Expr(column, (), column in _NUMERIC)
    for prefix, json_column in _JSON_PREFIXES:
        if path.startswith(prefix):
            key = path[len(prefix) :]
            if prefix == "properties.":
                key = "properties." + key
            if _JSON_KEY_PATH.match(key):
                sql = _json_string(store, key.count(".") + 1).format(json_column)
                return Expr(sql, ("$." + key,) * sql.count("?"))
    raise invalid(
        "unknown_property",
        where,
        f"unknown property path {path!r}; use a column path such as context.device.browser "
        "or a JSON path such as event_type.data.properties.plan",
    )


def check_regex(store: Store, pattern: str, where: str) -> None:
    """Reject patterns the backend's regex engine cannot compile (code ``invalid_regex``)."""
    if len(pattern) > 500:
        raise invalid("invalid_regex", where, "regular expression longer than 500 characters")
    try:
        store.query(fragments(store)["regex_probe"], [pattern])
    except Exception as exc:  # the driver's error type is backend specific
        raise invalid("invalid_regex", where, f"invalid regular expression: {exc}") from exc


def condition_expr(store: Store, cond: EventCondition, where: str) -> Expr:
    """SQL that is true for events matching ``cond`` (a step or a retention event)."""
    if cond.condition_type not in CONDITION_TYPES:
        raise invalid(
            "unknown_condition_type",
            f"{where}.condition_type",
            f"unknown condition_type {cond.condition_type!r}; expected one of "
            + ", ".join(sorted(CONDITION_TYPES)),
        )
    if cond.condition_value == "":
        return Expr("(event_type = ?)", (cond.condition_type,))
    column = KEY_FIELDS.get(cond.condition_type)
    if column is None:
        raise invalid(
            "condition_value_unsupported",
            f"{where}.condition_value",
            f"{cond.condition_type} events have no key field; condition_value must be empty",
        )
    if cond.match == "regex":
        check_regex(store, cond.condition_value, f"{where}.condition_value")
    match_sql = fragments(store)["match_" + cond.match].format(column)
    return Expr(f"(event_type = ? AND {match_sql})", (cond.condition_type, cond.condition_value))


def _scalar(value: Any, numeric: bool, where: str) -> Any:
    if isinstance(value, list) or value is None:
        raise invalid("invalid_filter", where, "this operator needs a single value")
    if numeric:
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                return float(value)
            except (TypeError, ValueError) as exc:
                raise invalid("invalid_filter", where, "a number is expected") from exc
        return float(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def filter_expr(store: Store, flt: PropertyFilter, where: str) -> Expr:
    """SQL for one property filter (rows where the property is NULL never match, except
    ``neq``/``not_in``/``not_contains``, which keep them, and ``is_not_set``)."""
    prop = property_expr(store, flt.property, f"{where}.property")
    col, params = prop.sql, prop.params
    op, value, frag = flt.operator, flt.value, fragments(store)
    vwhere = f"{where}.value"
    if op == "is_set":
        return Expr(f"({col} IS NOT NULL)", params)
    if op == "is_not_set":
        return Expr(f"({col} IS NULL)", params)
    if op in ("in", "not_in"):
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > 1000:
            raise invalid("invalid_filter", vwhere, "give 1 to 1000 values")
        values = [_scalar(v, prop.numeric, vwhere) for v in values]
        marks = ", ".join("?" for _ in values)
        body = f"{col} IN ({marks})"
        all_params = params + tuple(values)
        if op == "in":
            return Expr(f"({body})", all_params)
        return Expr(f"({col} IS NULL OR NOT ({body}))", params + all_params)
    if op in ("gt", "gte", "lt", "lte"):
        sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        number = _scalar(value, True, vwhere)
        target = col if prop.numeric else frag["to_double"].format(col)
        return Expr(f"({target} {sign} ?)", params + (number,))
    text = _scalar(value, prop.numeric, vwhere)
    if op == "eq":
        return Expr(f"({col} = ?)", params + (text,))
    if op == "neq":
        return Expr(f"({col} IS NULL OR {col} <> ?)", params + params + (text,))
    if prop.numeric:
        raise invalid("invalid_filter", f"{where}.operator", f"{op} needs a text property")
    if op == "regex":
        check_regex(store, text, vwhere)
        return Expr(frag["match_regex"].format(col), params + (text,))
    if op == "prefix":
        return Expr(frag["match_prefix"].format(col), params + (text,))
    inner = frag["match_contains"].format(col)
    if op == "contains":
        return Expr(inner, params + (text,))
    return Expr(f"({col} IS NULL OR NOT {inner})", params + params + (text,))


def where_clause(
    store: Store,
    project_id: str,
    start: datetime | None,
    end: datetime | None,
    filters: Sequence[PropertyFilter] = (),
    *,
    filters_path: str = "filters",
) -> Expr:
    """``project_id = ? AND ts >= ? AND ts < ? AND <filters>`` (bounds optional)."""
    parts = ["project_id = ?"]
    params: list[Any] = [project_id]
    if start is not None:
        parts.append("ts >= ?")
        params.append(start)
    if end is not None:
        parts.append("ts < ?")
        params.append(end)
    for i, flt in enumerate(filters):
        expr = filter_expr(store, flt, f"{filters_path}[{i}]")
        parts.append(expr.sql)
        params.extend(expr.params)
    return Expr(" AND ".join(parts), tuple(params))


def exact_sum_sql(value: str, where: str = "TRUE") -> str:
    """SQL summing the double ``value`` over the rows where ``where`` holds, keeping the cents
    next to +-1e15 (the API's bound on revenue), in any row order; NULL without rows. A plain
    double sum loses them (1e15 + 0.01 - 1e15 is 0.0 or 0.125): the integer parts add up exactly
    as DECIMAL(38, 0) and the fractions, exact doubles in (-1, 1), as doubles (as the overview's
    revenue does). Values beyond 1e32 (only from direct store writes) are added as doubles."""
    whole = f"CASE WHEN abs({value}) < 1e32 THEN trunc({value}) ELSE 0 END"
    part = f"CASE WHEN abs({value}) < 1e32 THEN {value} - trunc({value}) ELSE {value} END"
    return (
        f"(CAST(sum(CAST({whole} AS DECIMAL(38, 0))) FILTER (WHERE {where}) AS DOUBLE)"
        f" + sum({part}) FILTER (WHERE {where}))"
    )


def rate(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def user_codes(users: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """0-based user number per row of rows sorted by user."""
    n = len(users)
    codes = np.zeros(n, dtype=np.int64)
    if n > 1:
        arr = users.combine_chunks() if isinstance(users, pa.ChunkedArray) else users
        change = pc.not_equal(arr.slice(1), arr.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        codes[1:] = np.cumsum(change)
    return codes
