"""Project overview (totals, top lists, DAU/WAU/MAU, sessions) and event trends.

DAU/WAU/MAU are distinct users per calendar day / ISO week (Monday) / month in ``timezone``
(not rolling windows). Revenue is the sum of ``revenue`` over purchase events. Everything is
over ``[start_time, end_time)`` after ``filters``.

Without filters, in a zone that is UTC over the range (the default), the first pass below is
replaced by kept state: sessions from the kept sessions (:mod:`avila.analytics.session_reads`;
with identity links, the linked ids' sessions cut again by person:
:func:`~avila.analytics.session_reads.stitched_totals`) and unique users and DAU/WAU/MAU from
the daily rollups' user days, mapped to persons with identity links
(:func:`avila.analytics.rollup_reads.active_users`). Otherwise the overview costs two passes
over the range:

1. one sort of the range's events by (user hash, time), fetched as three narrow columns: sessions
   (:func:`avila.analytics.sessions.sessionize`), unique users and distinct users per day /
   week / month (a user's rows are contiguous and in time order, so "first row of this user in
   this bucket" is a comparison with the previous row);
2. one aggregate statement: ``GROUPING SETS`` give totals, revenue, events by type, top pages
   and top referrers in one hash aggregation (top N chosen in SQL by ``row_number()``), and a
   second set of ``GROUPING SETS`` gives distinct users per country and device type. The
   first part never needs resolved identities, so with identity stitching only the user
   parts read the resolving view (unless a filter names ``user_id``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from avila.analytics.calendar import (
    bucket_expr,
    bucket_label,
    bucket_of,
    local_us_array,
    local_us_expr,
    utc_throughout,
)
from avila.analytics.common import (
    OTHER,
    REST,
    Expr,
    condition_expr,
    events_source,
    fragments,
    names_the_user,
    parse_query,
    persons_relation,
    property_expr,
    time_range,
    where_clause,
    zone,
)
from avila.analytics.rollup_reads import (
    BY_COUNTRY,
    active_users,
    overview_aggregates,
    trend_rows,
)
from avila.analytics.sessions import SessionTotals, events_by_user, sessionize
from avila.schemas.analytics import OverviewQuery, SessionsQuery, TrendsQuery
from avila.storage.base import Store

# GROUPING(event_type, url, referrer): a set bit means "not grouped by that column".
_TOTAL, _BY_TYPE, _BY_URL, _BY_REFERRER = 7, 3, 5, 6

_AGGREGATES = """
SELECT 'events' AS part, g, k1, k2, n, pv, rev FROM (
  SELECT GROUPING(event_type, url, referrer) AS g, event_type AS k1, coalesce(url, referrer) AS k2,
    count(*) AS n, count(*) FILTER (WHERE event_type = 'page_view') AS pv, {revenue} AS rev
  FROM {event_source} WHERE {where} GROUP BY GROUPING SETS ((), (event_type), (url), (referrer))
) QUALIFY g IN (7, 3) OR (k2 IS NOT NULL AND (g = 6 OR pv > 0) AND row_number() OVER (
  PARTITION BY g, k2 IS NOT NULL AND (g = 6 OR pv > 0)
  ORDER BY CASE WHEN g = 5 THEN pv ELSE n END DESC, k2) <= ?)
UNION ALL
SELECT 'users', GROUPING(country, device_type), country, device_type, count(DISTINCT user_id),
  NULL, NULL
FROM {source} WHERE {where} GROUP BY GROUPING SETS ((country), (device_type))
"""
# Revenue as exact as the doubles allow: a plain double sum drops the cents next to a +-1e15
# purchase (the API's bound) and depends on the order of the rows. The integer parts add up
# exactly as DECIMAL(38, 0) (a cast of an integral double is exact, unlike DECIMAL(38, 6),
# which both engines compute from the inexact double ``revenue * 1e6``); the fractional parts
# are exact doubles in (-1, 1) and add up with a negligible error. Revenue beyond 1e32 (only
# from direct store writes) would overflow the DECIMAL and is added as a double.
_REVENUE = """(CAST(sum(CAST(CASE WHEN abs(revenue) < 1e32 THEN trunc(revenue) ELSE 0 END
    AS DECIMAL(38, 0))) FILTER (WHERE event_type = 'purchase') AS DOUBLE)
  + sum(CASE WHEN abs(revenue) < 1e32 THEN revenue - trunc(revenue) ELSE revenue END)
    FILTER (WHERE event_type = 'purchase'))"""


def overview(
    store: Store,
    project_id: str,
    query: OverviewQuery | Mapping[str, Any] | None = None,
    *,
    raw: bool = False,
) -> dict[str, Any]:
    """``{"total_events", "unique_users", "sessions", "events_by_type", "top_pages": [{"url",
    "views"}], "top_referrers": [{"referrer", "events"}], "countries": [{"country", "users"}],
    "devices": [{"device_type", "users"}], "revenue", "dau": [{"date", "users"}], "wau":
    [{"week_start", "users"}], "mau": [{"month", "users"}], "bounce_rate",
    "avg_session_duration_seconds", "pages_per_session", "start_time", "end_time"}``.

    Without filters, in a zone that is UTC over the range, users and sessions come from the
    kept sessions and the daily rollups (with identity links, plus the linked ids' raw rows);
    otherwise (or ``raw``) from the range's raw rows, sorted user by user. Both give the same
    answer."""
    q = parse_query(OverviewQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    where = where_clause(store, project_id, start, end, q.filters)
    source = events_source(store, project_id)
    # Counts by type, page and referrer do not depend on who a user is: unless a filter names
    # the user, they read the events table itself and skip resolving identities.
    by_user = any(names_the_user(f) for f in q.filters)
    event_source = source if by_user else fragments(store)["events_unstitched"]
    kept_way = not (raw or q.filters) and utc_throughout(tz, start, end)
    rows = None
    if not q.filters:
        # the kept way counts users per country and device in its active-users pass
        rows = overview_aggregates(
            store, project_id, start, end, q.top_n, stitched=source != event_source,
            users=not kept_way,
        )  # fmt: skip
    kept = None
    if kept_way:
        persons = persons_relation(store, source) if source != event_source else None
        kept = _kept_users_and_sessions(
            store, project_id, start, end, persons, places=rows is not None
        )
        if kept is None and rows is not None:  # its users rows were left to the kept way
            rows = overview_aggregates(
                store, project_id, start, end, q.top_n, stitched=source != event_source
            )
    if rows is None:
        rows = store.query(
            _AGGREGATES.format(
                source=source, event_source=event_source, where=where.sql, revenue=_REVENUE
            ),
            [*where.params, q.top_n, *where.params],
        )
    if kept is not None:
        rows = [*rows, *kept.places]
    total, revenue = 0, 0.0
    by_type: list[tuple[str, int]] = []
    pages: list[tuple[str, int]] = []
    referrers: list[tuple[str, int]] = []
    countries: list[tuple[str, int]] = []
    devices: list[tuple[str, int]] = []
    for part, g, k1, k2, n, pv, rev in rows:
        if part == "users":
            key = k1 if g == BY_COUNTRY else k2
            if key is not None:
                (countries if g == BY_COUNTRY else devices).append((key, int(n)))
        elif g == _TOTAL:
            total, revenue = int(n), float(rev or 0.0)
        elif g == _BY_TYPE:
            by_type.append((k1, int(n)))
        elif g == _BY_URL:
            pages.append((k2, int(pv)))
        elif g == _BY_REFERRER:
            referrers.append((k2, int(n)))

    if kept is not None:
        totals, active, unique_users = kept.totals, kept.active, kept.users
    else:
        totals, active = _users_and_sessions(store, project_id, where, total, tz, start, end)
        unique_users = totals.users
    sessions = totals.summary()
    return {
        "start_time": start.isoformat() + "Z",
        "end_time": end.isoformat() + "Z",
        "total_events": total,
        "unique_users": unique_users,
        "sessions": sessions["sessions"],
        "events_by_type": dict(_ranked(by_type)),
        "top_pages": [{"url": u, "views": n} for u, n in _ranked(pages)],
        "top_referrers": [{"referrer": r, "events": n} for r, n in _ranked(referrers)],
        "countries": [{"country": c, "users": n} for c, n in _ranked(countries)[: q.top_n]],
        "devices": [{"device_type": d, "users": n} for d, n in _ranked(devices)[: q.top_n]],
        "revenue": revenue,
        "dau": [
            {"date": bucket_label(b, "day"), "users": n} for b, n in sorted(active["day"].items())
        ],
        "wau": [
            {"week_start": bucket_label(b, "week"), "users": n}
            for b, n in sorted(active["week"].items())
        ],
        "mau": [
            {"month": bucket_label(b, "month"), "users": n}
            for b, n in sorted(active["month"].items())
        ],
        "bounce_rate": sessions["bounce_rate"],
        "avg_session_duration_seconds": sessions["avg_duration_seconds"],
        "pages_per_session": sessions["pages_per_session"],
    }


class _KeptUsers(NamedTuple):
    totals: SessionTotals
    active: dict[str, Counter[int]]
    users: int
    #: users rows per country and device type (with ``places``; else empty)
    places: list[tuple[Any, ...]]


def _kept_users_and_sessions(
    store: Store,
    project_id: str,
    start: datetime,
    end: datetime,
    persons: str | None = None,
    *,
    places: bool = False,
) -> _KeptUsers | None:
    """Sessions from the kept sessions, users and active users per UTC day, week and month
    (with ``places``, also users per country and device type) from the daily rollups (no raw
    rows but the range's partial days, and with identity links, resolved through ``persons``,
    the linked ids' rows; ``persons`` None: the caller found no link in the project); None
    when either cannot answer exactly, or the linked ids' rows are most of the range's and one
    pass over raw rows costs less (:func:`avila.analytics.session_reads.stitched_totals`)."""
    from avila.analytics import session_reads

    if not session_reads.default_question(store, SessionsQuery()):
        return None
    if persons is None:
        totals = session_reads.kept_totals(store, project_id, start, end, None, users=False)
    else:
        totals = session_reads.stitched_totals(store, project_id, start, end, persons)
    if totals is None:
        return None
    active = active_users(store, project_id, start, end, persons=persons, places=places)
    if active is None:
        return None
    per_bucket = {interval: Counter(found) for interval, found in active.per_bucket.items()}
    return _KeptUsers(totals, per_bucket, active.users, active.places)


def _users_and_sessions(
    store: Store,
    project_id: str,
    where: Expr,
    total: int,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
) -> tuple[SessionTotals, dict[str, Counter[int]]]:
    """Sessions, users and active users per local day, week and month from the range's raw
    rows, sorted user by user; a long range comes in slices of whole users, whose distinct
    users per bucket add up (no user is in two slices)."""
    totals = SessionTotals()  # the overview reports no sessions per day
    active: dict[str, Counter[int]] = {"day": Counter(), "week": Counter(), "month": Counter()}
    for table, codes in events_by_user(store, project_id, where, rows=total):
        if not len(codes):
            continue
        codes = codes - codes[0]
        totals.add(sessionize(table, codes=codes))
        t_us = np.asarray(table.column("t").to_numpy(), np.int64)
        local = local_us_array(t_us, tz, start, end)
        del table, t_us
        for interval, counts in active.items():
            counts.update(dict(distinct_users_by_bucket(codes, local, interval)))
    return totals, active


def _ranked(pairs: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    """Largest count first, then by key."""
    return sorted(pairs, key=lambda p: (-p[1], p[0]))


def month_buckets(local_us: np.ndarray) -> np.ndarray:
    """``year * 12 + month - 1`` of local-time microseconds (see ``bucket_expr``)."""
    months = local_us.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
    return months + 1970 * 12


def distinct_users_by_bucket(
    codes: np.ndarray, local_us: np.ndarray, interval: str
) -> list[tuple[int, int]]:
    """``[(bucket, distinct users)]`` in bucket order, for rows sorted by (user, time)."""
    if not len(codes):
        return []
    if interval == "month":
        buckets = month_buckets(local_us)
    else:
        days = local_us // 86_400_000_000
        buckets = days if interval == "day" else (days + 3) // 7
    same_user = codes[1:] == codes[:-1]
    step = np.diff(buckets)
    if np.any(same_user & (step < 0)):
        # a DST change moved local time back across a boundary: count pairs the slow way
        pairs = np.unique(np.stack([codes, buckets]), axis=1)
        first = pairs[1]
    else:
        new = np.ones(len(codes), dtype=bool)
        new[1:] = ~same_user | (step != 0)
        first = buckets[new]
    uniq, counts = np.unique(first, return_counts=True)
    return list(zip(uniq.tolist(), counts.tolist(), strict=True))


def trends(
    store: Store,
    project_id: str,
    query: TrendsQuery | Mapping[str, Any] | None = None,
    *,
    raw: bool = False,
) -> dict[str, Any]:
    """Event counts per ``interval`` bucket (local to ``timezone``, zero-filled):
    ``{"interval", "timezone", "series": [{"breakdown_value", "total", "data": [{"time",
    "count", "users"}]}]}``. Without ``breakdown`` there is one series with value null; with it,
    the ``breakdown_limit`` values with most events, then ``"Other"`` for the rest. The plain
    question (any event, no filters or breakdown, daily or longer in UTC, midnight bounds) is
    read from the daily rollups when they agree with the events
    (:func:`avila.analytics.rollup_reads.trend_rows`); ``raw`` reads the events in any case."""
    q = parse_query(TrendsQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    where = where_clause(store, project_id, start, end, q.filters)
    if q.event is not None:
        cond = condition_expr(store, q.event, "event")
        where = Expr(f"{where.sql} AND {cond.sql}", (*where.params, *cond.params))
    lo = bucket_of(start, tz, q.interval)
    hi = bucket_of(end - timedelta(microseconds=1), tz, q.interval)
    local = local_us_expr(store, "ts", tz, start, end)
    bucket = bucket_expr(store, "loc", q.interval)
    source = events_source(store, project_id)
    if q.breakdown is None:
        prop = Expr(fragments(store)["null_text"])
    else:
        prop = property_expr(store, q.breakdown, "breakdown")
    plain = not (raw or q.event or q.filters or q.breakdown)
    rows = trend_rows(store, project_id, start, end, tz, q.interval) if plain else None
    if rows is None:
        rows = store.query(
            f"SELECT {bucket} AS b, v, count(*), count(DISTINCT user_id) FROM (SELECT user_id,"
            f" {local.sql} AS loc, {prop.sql} AS v FROM {source} WHERE {where.sql})"
            " GROUP BY b, v",
            [*local.params, *prop.params, *where.params],
        )
    totals: dict[Any, int] = {}
    for _, v, n, _u in rows:
        totals[v] = totals.get(v, 0) + int(n)
    ranked = sorted(totals, key=lambda v: (-totals[v], v is None, str(v)))
    keep = set(ranked[: q.breakdown_limit])
    series: dict[Any, dict[int, list[int]]] = {}
    other_users_exact = True
    for b, v, n, u in rows:
        key = v if v in keep else REST
        cell = series.setdefault(key, {}).setdefault(int(b), [0, 0])
        cell[0] += int(n)
        if key is REST and cell[1]:
            other_users_exact = False
        cell[1] += int(u)
    if REST in series and not other_users_exact:
        # distinct users of merged values cannot be summed: count them again.
        values = [v for v in ranked if v not in keep and v is not None]
        checks = ["v IN (" + ", ".join("?" for _ in values) + ")"] if values else []
        if None in totals and None not in keep:
            checks.append("v IS NULL")
        for b, n in store.query(
            f"SELECT {bucket} AS b, count(DISTINCT user_id) FROM (SELECT user_id, {local.sql} AS"
            f" loc, {prop.sql} AS v FROM {source} WHERE {where.sql}) WHERE {' OR '.join(checks)}"
            " GROUP BY b",
            [*local.params, *prop.params, *where.params, *values],
        ):
            series[REST][int(b)][1] = int(n)
    order = [v for v in ranked if v in keep] + ([REST] if REST in series else [])
    out = []
    for value in order or [None]:
        cells = series.get(value, {})
        out.append(
            {
                "breakdown_value": OTHER if value is REST else value,
                "total": sum(c[0] for c in cells.values()),
                "data": [
                    {
                        "time": bucket_label(i, q.interval),
                        "count": cells.get(i, [0, 0])[0],
                        "users": cells.get(i, [0, 0])[1],
                    }
                    for i in range(lo, hi + 1)
                ],
            }
        )
    return {"interval": q.interval, "timezone": q.timezone, "breakdown": q.breakdown, "series": out}
