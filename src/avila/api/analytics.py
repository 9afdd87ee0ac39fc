"""Analytics endpoints: funnels, cohorts, RFM, overview, trends, sessions, real time, paths,
lifecycle and stickiness.

A thin transport layer over :mod:`avila.analytics`: bodies are decoded by Litestar with msgspec
into the Structs of :mod:`avila.schemas.analytics` (schema errors: 422 ``validation_failed``
with each field's path; malformed JSON: 400), GET query strings are collected into the same
Structs, and the query runs in a query worker process (:mod:`avila.analytics.workers`; a
thread of the server without one) so the event loop keeps serving ingestion.
Semantic errors (one-step funnel, bad regex, unknown property...) are raised by the analytics
functions as 422s with their own stable codes. The paths, lifecycle and stickiness routes also
say what a bad field accepts (``allowed`` values or ``minimum``/``maximum``) in each detail. Every query is scoped to the key's project.
Semantics and examples: docs/analytics.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import ValidationException
from litestar.params import Parameter

from avila.analytics import (
    funnel,
    funnel_dropped,
    overview,
    realtime,
    retention,
    rfm,
    sessions,
    trends,
)
from avila.analytics.common import invalid, parse_query
from avila.analytics.lifecycle import lifecycle
from avila.analytics.paths import paths
from avila.analytics.stickiness import stickiness
from avila.analytics.workers import QueryWorkers
from avila.api.component import AppContext
from avila.api.errors import error_response
from avila.schemas.analytics import (
    CohortQuery,
    FunnelDroppedQuery,
    FunnelQuery,
    Interval,
    LifecycleQuery,
    MatchMode,
    OverviewQuery,
    PathsQuery,
    PropertyFilter,
    RealtimeQuery,
    RFMQuery,
    SessionsQuery,
    StickinessQuery,
    TrendsQuery,
)
from avila.schemas.constraints import explain
from avila.security.keys import Principal
from avila.storage.base import Store

Result = dict[str, Any]
# Query parameters carry the ranges of the query Structs so the OpenAPI document states them.
TopN = Annotated[int, Parameter(ge=1, le=100)]
TimeoutSeconds = Annotated[int, Parameter(ge=1, le=86400)]
MaxSessionSeconds = Annotated[int, Parameter(ge=60, le=7 * 86400)]

WORKERS_KEY = "query_workers"
_READ = {"scope": "read"}
_TAGS = ["analytics"]
_RANGE_DOC = (
    " `start_time`/`end_time` are RFC 3339 (half-open range, default the last 30 days);"
    " `filters` is a JSON array of `{property, operator, value}`."
)


def setup(ctx: AppContext) -> None:
    workers = ctx.state[WORKERS_KEY] = QueryWorkers(ctx.store, ctx.settings.query_workers)
    ctx.metrics.query_workers_busy.set_function(lambda: workers.busy)
    ctx.metrics.query_workers_waiting.set_function(lambda: workers.waiting)
    # read on the event loop at each scrape (/metrics is async): idle deaths count at once
    ctx.metrics.query_worker_exits.set_function(workers.reap)


async def shutdown(ctx: AppContext) -> None:
    await asyncio.to_thread(ctx.state[WORKERS_KEY].close)


DEPENDENCIES = {"query_workers": lambda state: state[WORKERS_KEY]}


async def run(fn: Callable[..., Result], *args: Any) -> Result:
    """Run a (blocking, possibly heavy) analytics function off the event loop."""
    return await asyncio.to_thread(fn, *args)


def decode_filters(text: str | None) -> list[PropertyFilter]:
    """The ``filters`` query parameter: a JSON array of property filters."""
    if not text:
        return []
    try:
        return msgspec.json.decode(text, type=list[PropertyFilter])
    except msgspec.ValidationError as exc:
        raise invalid("invalid_filter", "filters", f"invalid filters: {exc}") from None
    except msgspec.DecodeError as exc:
        raise invalid("invalid_filter", "filters", f"filters is not valid JSON: {exc}") from None


def range_params(
    start_time: datetime | None, end_time: datetime | None, filters: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"filters": decode_filters(filters)}
    if start_time is not None:
        out["start_time"] = start_time
    if end_time is not None:
        out["end_time"] = end_time
    return out


@post(
    "/api/v1/analytics/funnel",
    opt=_READ,
    status_code=200,
    summary="Conversion funnel",
    description=(
        "Users reaching each step in order within `conversion_window_seconds` (default 14 days)"
        " of step 1 (ClickHouse windowFunnel semantics); `mode` ordered | strict_order |"
        " strict_increase | unordered; optional `breakdown` property and daily/weekly `trend`."
        + _RANGE_DOC
    ),
    tags=_TAGS,
)
async def funnel_report(
    data: FunnelQuery, principal: Principal, store: Store, query_workers: QueryWorkers
) -> Result:
    return await query_workers.run(funnel, store, principal.project_id, data)


@post(
    "/api/v1/analytics/cohort",
    opt=_READ,
    status_code=200,
    summary="Cohort retention",
    description=(
        "First-time cohorts by day/week/month (in `timezone`); retained users per period after"
        " the cohort period, `exact` or `on_or_after`." + _RANGE_DOC
    ),
    tags=_TAGS,
)
async def cohort_report(
    principal: Principal, store: Store, query_workers: QueryWorkers, data: CohortQuery | None = None
) -> Result:
    return await query_workers.run(retention, store, principal.project_id, data or CohortQuery())


@post(
    "/api/v1/analytics/rfm",
    opt=_READ,
    status_code=200,
    summary="RFM segmentation",
    description=(
        "Purchasing users scored 1-5 on recency, frequency and monetary value by quintile over"
        " `window_days` before `reference_date`, grouped into the standard segments."
    ),
    tags=_TAGS,
)
async def rfm_report(
    principal: Principal, store: Store, query_workers: QueryWorkers, data: RFMQuery | None = None
) -> Result:
    return await query_workers.run(rfm, store, principal.project_id, data or RFMQuery())


@get(
    "/api/v1/analytics/overview",
    opt=_READ,
    summary="Project overview",
    description=(
        "Totals, events by type, top pages/referrers, countries, devices, revenue, DAU/WAU/MAU"
        " and session metrics." + _RANGE_DOC
    ),
    tags=_TAGS,
)
async def overview_report(
    principal: Principal,
    store: Store,
    query_workers: QueryWorkers,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    filters: str | None = None,
    timezone: str = "UTC",
    top_n: TopN = 10,
) -> Result:
    q = parse_query(
        OverviewQuery,
        {**range_params(start_time, end_time, filters), "timezone": timezone, "top_n": top_n},
    )
    return await query_workers.run(overview, store, principal.project_id, q)


@get(
    "/api/v1/analytics/trends",
    opt=_READ,
    summary="Event trends",
    description=(
        "Events and distinct users per `interval` (hour, day, week, month in `timezone`),"
        " optionally only events matching `event_type`/`event_value`/`match`, split by the"
        " `breakdown` property (top `breakdown_limit` values, the rest as Other)." + _RANGE_DOC
    ),
    tags=_TAGS,
)
async def trends_report(
    principal: Principal,
    store: Store,
    query_workers: QueryWorkers,
    interval: Interval = "day",
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    filters: str | None = None,
    breakdown: str | None = None,
    breakdown_limit: TopN = 10,
    event_type: str | None = None,
    event_value: str = "",
    match: MatchMode = "exact",
    timezone: str = "UTC",
) -> Result:
    body: dict[str, Any] = {
        **range_params(start_time, end_time, filters),
        "interval": interval,
        "breakdown": breakdown,
        "breakdown_limit": breakdown_limit,
        "timezone": timezone,
    }
    if event_type is not None:
        body["event"] = {
            "condition_type": event_type,
            "condition_value": event_value,
            "match": match,
        }
    q = parse_query(TrendsQuery, body)
    return await query_workers.run(trends, store, principal.project_id, q)


@get(
    "/api/v1/analytics/sessions",
    opt=_READ,
    summary="Session metrics",
    description=(
        "Sessions (client session_id, else 30-minute inactivity cut at 24 h), average duration,"
        " bounce rate, pages per session and the same per local day." + _RANGE_DOC
    ),
    tags=_TAGS,
)
async def sessions_report(
    principal: Principal,
    store: Store,
    query_workers: QueryWorkers,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    filters: str | None = None,
    timezone: str = "UTC",
    timeout_seconds: TimeoutSeconds = 1800,
    max_session_seconds: MaxSessionSeconds = 86400,
) -> Result:
    q = session_query(start_time, end_time, filters, timezone, timeout_seconds, max_session_seconds)
    return await query_workers.run(sessions, store, principal.project_id, q)


def session_query(
    start_time: datetime | None,
    end_time: datetime | None,
    filters: str | None,
    timezone: str,
    timeout_seconds: int,
    max_session_seconds: int,
    limit: int = 50,
) -> SessionsQuery:
    return parse_query(
        SessionsQuery,
        {
            **range_params(start_time, end_time, filters),
            "timezone": timezone,
            "timeout_seconds": timeout_seconds,
            "max_session_seconds": max_session_seconds,
            "limit": limit,
        },
    )


@get(
    "/api/v1/analytics/realtime",
    opt=_READ,
    summary="Real-time counters",
    description=(
        "Events and active users in the last 1, 5 and 15 minutes by server receive time,"
        " events per second, and the top pages and event types of the last 5 minutes."
    ),
    tags=_TAGS,
)
async def realtime_report(
    principal: Principal, store: Store, query_workers: QueryWorkers, top_n: TopN = 10
) -> Result:
    q = parse_query(RealtimeQuery, {"top_n": top_n})
    # Cheap (bounded to the last 15 minutes) but still a blocking store call.
    return await query_workers.run(realtime, store, principal.project_id, q)


def explained_errors(model: type) -> dict[Any, Any]:
    """Route-level handler: schema errors of ``model`` bodies with what each field accepts."""

    def handle(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
        items = exc.extra if isinstance(exc.extra, list) else []
        details = [
            {"path": str(item.get("key", "")), "message": str(item.get("message", ""))}
            for item in items
            if isinstance(item, dict)
        ]
        details = explain(model, details)
        message = details[0]["message"] if details else "request parameters are invalid"
        return error_response(422, "validation_failed", message, details)

    return {ValidationException: handle}


@post(
    "/api/v1/analytics/funnel/dropped",
    opt=_READ,
    status_code=200,
    summary="Users who dropped at a funnel step",
    description=(
        "The funnel query's users who reached `step` (1-based, 1 to steps-1) and not the next"
        " one: `total` equals the funnel report's step count minus the next step's count;"
        " `users` lists the first `limit` (1-1000, default 100) by `user_id`." + _RANGE_DOC
    ),
    tags=_TAGS,
    exception_handlers=explained_errors(FunnelDroppedQuery),
)
async def funnel_dropped_users(
    data: FunnelDroppedQuery, principal: Principal, store: Store, query_workers: QueryWorkers
) -> Result:
    return await query_workers.run(funnel_dropped, store, principal.project_id, data)


@post(
    "/api/v1/analytics/paths",
    opt=_READ,
    status_code=200,
    summary="User paths (Sankey)",
    description=(
        "Per user, the first path in range from the first `start` event and/or to the first"
        " `end` event, `steps` steps (2-20) of event names such as `page_view:/pricing`, repeats"
        " collapsed; as Sankey `nodes` (step, name, users) and `links` (source, target, users)."
        + _RANGE_DOC
    ),
    tags=_TAGS,
    exception_handlers=explained_errors(PathsQuery),
)
async def paths_report(
    principal: Principal, store: Store, query_workers: QueryWorkers, data: PathsQuery | None = None
) -> Result:
    return await query_workers.run(paths, store, principal.project_id, data or PathsQuery())


@post(
    "/api/v1/analytics/lifecycle",
    opt=_READ,
    status_code=200,
    summary="User lifecycle",
    description=(
        "Per `period` (day, week, month in `timezone`) the new, returning, resurrecting and"
        " dormant users (PostHog's definitions; `dormant` is negative) active on `event`."
        + _RANGE_DOC
    ),
    tags=_TAGS,
    exception_handlers=explained_errors(LifecycleQuery),
)
async def lifecycle_report(
    principal: Principal,
    store: Store,
    query_workers: QueryWorkers,
    data: LifecycleQuery | None = None,
) -> Result:
    return await query_workers.run(lifecycle, store, principal.project_id, data or LifecycleQuery())


@post(
    "/api/v1/analytics/stickiness",
    opt=_READ,
    status_code=200,
    summary="Stickiness",
    description=(
        "Users by number of active days (local calendar days in `timezone`) within each"
        " `period` (week or month), per period and summed." + _RANGE_DOC
    ),
    tags=_TAGS,
    exception_handlers=explained_errors(StickinessQuery),
)
async def stickiness_report(
    principal: Principal,
    store: Store,
    query_workers: QueryWorkers,
    data: StickinessQuery | None = None,
) -> Result:
    return await query_workers.run(
        stickiness, store, principal.project_id, data or StickinessQuery()
    )


ROUTES = [
    funnel_report,
    funnel_dropped_users,
    cohort_report,
    rfm_report,
    overview_report,
    trends_report,
    sessions_report,
    realtime_report,
    paths_report,
    lifecycle_report,
    stickiness_report,
]
