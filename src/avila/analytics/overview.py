"""Project overview (totals, top lists, DAU/WAU/MAU, sessions) and event trends.

DAU/WAU/MAU are distinct users per calendar day / ISO week (Monday) / month in ``timezone``
(not rolling windows). Revenue is the sum of ``revenue`` over purchase events. Everything is
over ``[start_time, end_time)`` after ``filters``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from avila.analytics.common import (
    OTHER,
    Expr,
    bucket_expr,
    bucket_label,
    bucket_of,
    condition_expr,
    local_us_expr,
    parse_query,
    property_expr,
    time_range,
    where_clause,
    zone,
)
from avila.analytics.sessions import session_summary, sessions_cte
from avila.schemas.analytics import OverviewQuery, TrendsQuery
from avila.storage.base import Store


def overview(
    store: Store, project_id: str, query: OverviewQuery | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"total_events", "unique_users", "sessions", "events_by_type", "top_pages": [{"url",
    "views"}], "top_referrers": [{"referrer", "events"}], "countries": [{"country", "users"}],
    "devices": [{"device_type", "users"}], "revenue", "dau": [{"date", "users"}], "wau":
    [{"week_start", "users"}], "mau": [{"month", "users"}], "bounce_rate",
    "avg_session_duration_seconds", "pages_per_session", "start_time", "end_time"}``."""
    q = parse_query(OverviewQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    where = where_clause(store, project_id, start, end, q.filters)
    w, p = where.sql, list(where.params)
    total, users, revenue = store.query(
        "SELECT count(*), count(DISTINCT user_id), coalesce(sum(CASE WHEN event_type ="
        f" 'purchase' THEN revenue END), 0) FROM events WHERE {w}",
        p,
    )[0]
    by_type = store.query(
        f"SELECT event_type, count(*) FROM events WHERE {w} GROUP BY 1 ORDER BY 2 DESC, 1", p
    )

    def top(column: str, measure: str, extra: str = "") -> list[tuple[Any, int]]:
        return store.query(
            f"SELECT {column}, {measure} FROM events WHERE {w} AND {column} IS NOT NULL {extra}"
            " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
            [*p, q.top_n],
        )

    pages = top("url", "count(*)", "AND event_type = 'page_view'")
    referrers = top("referrer", "count(*)")
    countries = top("country", "count(DISTINCT user_id)")
    devices = top("device_type", "count(DISTINCT user_id)")
    local = local_us_expr(store, "ts", tz, start, end)
    active: dict[str, list[dict[str, Any]]] = {}
    for interval, label in (("day", "date"), ("week", "week_start"), ("month", "month")):
        rows = store.query(
            f"SELECT {bucket_expr(store, 'loc', interval)} AS b, count(DISTINCT user_id) FROM"
            f" (SELECT user_id, {local.sql} AS loc FROM events WHERE {w}) GROUP BY b ORDER BY b",
            [*local.params, *p],
        )
        active[interval] = [
            {label: bucket_label(int(b), interval), "users": int(n)} for b, n in rows
        ]
    summary = session_summary(store, sessions_cte(store, where, 1800, 86400))
    return {
        "start_time": start.isoformat() + "Z",
        "end_time": end.isoformat() + "Z",
        "total_events": int(total),
        "unique_users": int(users),
        "sessions": summary["sessions"],
        "events_by_type": {t: int(n) for t, n in by_type},
        "top_pages": [{"url": u, "views": int(n)} for u, n in pages],
        "top_referrers": [{"referrer": r, "events": int(n)} for r, n in referrers],
        "countries": [{"country": c, "users": int(n)} for c, n in countries],
        "devices": [{"device_type": d, "users": int(n)} for d, n in devices],
        "revenue": float(revenue),
        "dau": active["day"],
        "wau": active["week"],
        "mau": active["month"],
        "bounce_rate": summary["bounce_rate"],
        "avg_session_duration_seconds": summary["avg_duration_seconds"],
        "pages_per_session": summary["pages_per_session"],
    }


def trends(
    store: Store, project_id: str, query: TrendsQuery | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Event counts per ``interval`` bucket (local to ``timezone``, zero-filled):
    ``{"interval", "timezone", "series": [{"breakdown_value", "total", "data": [{"time",
    "count", "users"}]}]}``. Without ``breakdown`` there is one series with value null; with it,
    the ``breakdown_limit`` values with most events, then ``"Other"`` for the rest."""
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
    if q.breakdown is None:
        prop = Expr("CAST(NULL AS VARCHAR)")
    else:
        prop = property_expr(store, q.breakdown, "breakdown")
    rows = store.query(
        f"SELECT {bucket} AS b, v, count(*), count(DISTINCT user_id) FROM (SELECT user_id,"
        f" {local.sql} AS loc, {prop.sql} AS v FROM events WHERE {where.sql}) GROUP BY b, v",
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
        key = v if v in keep else OTHER
        cell = series.setdefault(key, {}).setdefault(int(b), [0, 0])
        cell[0] += int(n)
        if key == OTHER and cell[1]:
            other_users_exact = False
        cell[1] += int(u)
    if OTHER in series and not other_users_exact:
        # distinct users of merged values cannot be summed: count them again.
        values = [v for v in ranked if v not in keep and v is not None]
        checks = ["v IN (" + ", ".join("?" for _ in values) + ")"] if values else []
        if None in totals and None not in keep:
            checks.append("v IS NULL")
        for b, n in store.query(
            f"SELECT {bucket} AS b, count(DISTINCT user_id) FROM (SELECT user_id, {local.sql} AS"
            f" loc, {prop.sql} AS v FROM events WHERE {where.sql}) WHERE {' OR '.join(checks)}"
            " GROUP BY b",
            [*local.params, *prop.params, *where.params, *values],
        ):
            series[OTHER][int(b)][1] = int(n)
    order = [v for v in ranked if v in keep] + ([OTHER] if OTHER in series else [])
    out = []
    for value in order or [None]:
        cells = series.get(value, {})
        out.append(
            {
                "breakdown_value": value,
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
