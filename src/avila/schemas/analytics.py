"""Request models of the analytics queries (msgspec Structs).

The API layer decodes bodies/query strings into these; the analytics functions accept either a
Struct or a plain ``dict`` (converted with :func:`avila.analytics.common.parse_query`, which maps
``msgspec.ValidationError`` to :class:`avila.errors.ValidationFailed` with the field's JSON path).
Semantic checks that msgspec cannot express (step counts, regexes, property paths, time zones)
live in the analytics modules and raise ``ValidationFailed`` with a stable ``code``.

Times: ``start_time``/``end_time`` are RFC 3339; naive values are taken as UTC. The range is
half-open ``[start_time, end_time)`` and defaults to the last 30 days.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

MatchMode = Literal["exact", "prefix", "contains", "regex"]
FunnelMode = Literal["ordered", "strict_order", "strict_increase", "unordered"]
FilterOperator = Literal[
    "eq",
    "neq",
    "in",
    "not_in",
    "contains",
    "not_contains",
    "prefix",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "is_set",
    "is_not_set",
]
FilterValue = str | int | float | bool | list[str | int | float] | None
Interval = Literal["hour", "day", "week", "month"]
Period = Literal["day", "week", "month"]

PropertyPath = Annotated[str, Meta(min_length=1, max_length=200)]
TopN = Annotated[int, Meta(ge=1, le=100)]


class PropertyFilter(Struct, forbid_unknown_fields=True):
    """``property`` is a path such as ``context.device.browser`` or ``event_type.data.url``."""

    property: PropertyPath
    operator: FilterOperator = "eq"
    value: FilterValue = None


class EventCondition(Struct, forbid_unknown_fields=True):
    """An event of ``condition_type`` (snake_case) whose key field matches ``condition_value``.

    ``condition_value`` "" matches any event of the type. Key fields: url (page_view, click),
    product_id (product_view, add_to_cart, remove_from_cart), name (custom), search_query
    (search), order_id (purchase).
    """

    condition_type: str
    condition_value: Annotated[str, Meta(max_length=2000)] = ""
    match: MatchMode = "exact"


class FunnelStep(Struct, forbid_unknown_fields=True):
    condition_type: str
    condition_value: Annotated[str, Meta(max_length=2000)] = ""
    name: Annotated[str, Meta(max_length=200)] = ""
    match: MatchMode = "exact"


class FunnelQuery(Struct, forbid_unknown_fields=True):
    steps: list[FunnelStep]
    funnel_name: Annotated[str, Meta(max_length=200)] = ""
    conversion_window_seconds: Annotated[int, Meta(ge=1, le=366 * 86400)] = 1_209_600
    mode: FunnelMode = "ordered"
    start_time: datetime | None = None
    end_time: datetime | None = None
    filters: list[PropertyFilter] = []
    breakdown: PropertyPath | None = None
    breakdown_limit: TopN = 10
    trend: Literal["day", "week"] | None = None
    timezone: str = "UTC"


#: Users listed by the funnel drop-off query at most (``limit``).
DROPPED_LIMIT_MAX = 1000


class FunnelDroppedQuery(FunnelQuery, forbid_unknown_fields=True, kw_only=True):
    """A funnel query plus the 1-based ``step`` the listed users reached last (converted
    through ``step``, not ``step + 1``) and how many of them to list."""

    step: Annotated[int, Meta(ge=1, le=19)]
    limit: Annotated[int, Meta(ge=1, le=DROPPED_LIMIT_MAX)] = 100


class CohortQuery(Struct, forbid_unknown_fields=True):
    period: Period = "week"
    periods: Annotated[int, Meta(ge=1, le=400)] = 8
    start_event: EventCondition | None = None
    return_event: EventCondition | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    mode: Literal["exact", "on_or_after"] = "exact"
    timezone: str = "UTC"
    filters: list[PropertyFilter] = []


class RFMQuery(Struct, forbid_unknown_fields=True):
    """Purchases in ``[reference_date - window_days, reference_date)``; default reference: now."""

    reference_date: datetime | None = None
    window_days: Annotated[int, Meta(ge=1, le=3650)] = 365
    filters: list[PropertyFilter] = []
    #: list up to this many users per segment, highest monetary first (0: none)
    members: Annotated[int, Meta(ge=0, le=1000)] = 0


class SessionsQuery(Struct, forbid_unknown_fields=True):
    start_time: datetime | None = None
    end_time: datetime | None = None
    filters: list[PropertyFilter] = []
    timeout_seconds: Annotated[int, Meta(ge=1, le=86400)] = 1800
    max_session_seconds: Annotated[int, Meta(ge=60, le=7 * 86400)] = 86400
    timezone: str = "UTC"
    limit: Annotated[int, Meta(ge=0, le=1000)] = 50


class OverviewQuery(Struct, forbid_unknown_fields=True):
    start_time: datetime | None = None
    end_time: datetime | None = None
    filters: list[PropertyFilter] = []
    top_n: TopN = 10
    timezone: str = "UTC"


class TrendsQuery(Struct, forbid_unknown_fields=True):
    interval: Interval = "day"
    event: EventCondition | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    filters: list[PropertyFilter] = []
    breakdown: PropertyPath | None = None
    breakdown_limit: TopN = 10
    timezone: str = "UTC"


#: Path steps: at least 2 (one link), at most 20 (a readable Sankey).
PATH_STEPS_MIN, PATH_STEPS_MAX = 2, 20
PathSteps = Annotated[int, Meta(ge=PATH_STEPS_MIN, le=PATH_STEPS_MAX)]
#: Event types a path may be restricted to (``include``); names as in conditions.
EventTypeName = Annotated[str, Meta(min_length=1, max_length=40)]


class PathsQuery(Struct, forbid_unknown_fields=True):
    """Per user, the first path in range (see :mod:`avila.analytics.paths`)."""

    start: EventCondition | None = None
    end: EventCondition | None = None
    steps: PathSteps = 5
    start_time: datetime | None = None
    end_time: datetime | None = None
    filters: list[PropertyFilter] = []
    include: Annotated[list[EventTypeName], Meta(max_length=20)] = []
    limit_per_step: Annotated[int, Meta(ge=1, le=500)] = 50


class LifecycleQuery(Struct, forbid_unknown_fields=True):
    """New / returning / resurrecting / dormant users per period (PostHog's definitions)."""

    period: Period = "week"
    event: EventCondition | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    filters: list[PropertyFilter] = []
    timezone: str = "UTC"


class StickinessQuery(Struct, forbid_unknown_fields=True):
    """Users by number of active days within each week or month."""

    period: Literal["week", "month"] = "week"
    event: EventCondition | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    filters: list[PropertyFilter] = []
    timezone: str = "UTC"


class RealtimeQuery(Struct, forbid_unknown_fields=True):
    """``now`` is for tests and replays; the default is the server's clock (UTC)."""

    now: datetime | None = None
    top_n: TopN = 10


__all__ = [
    "CohortQuery",
    "EventCondition",
    "FunnelDroppedQuery",
    "FunnelQuery",
    "FunnelStep",
    "LifecycleQuery",
    "OverviewQuery",
    "PathsQuery",
    "PropertyFilter",
    "RFMQuery",
    "RealtimeQuery",
    "SessionsQuery",
    "StickinessQuery",
    "TrendsQuery",
]
