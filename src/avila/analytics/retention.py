"""Cohort retention (first-time cohorts, calendar buckets).

Semantics (shared/REFERENCES.md, "Retention"): a user's cohort is the period (day, ISO week
starting Monday, or month, as wall time in ``timezone``) of their first-ever qualifying
``start_event``; users whose first qualifying event lies in ``[start_time, end_time)`` are
included. Retained at period k (``exact``) = cohort users with at least one ``return_event`` in
period P0 + k; ``on_or_after`` = at least one return event in any period >= k (no upper bound).
Period 0 is the whole cohort by definition. ``retained``/``rates`` have ``periods`` entries
(k = 0 .. periods-1); periods that have not happened yet report 0. Only non-empty cohorts are
listed. Missing ``start_event``/``return_event`` mean "any event". ``filters`` apply to both.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from avila.analytics.common import (
    Expr,
    bucket_expr,
    bucket_label,
    condition_expr,
    events_source,
    local_us_expr,
    parse_query,
    rate,
    time_range,
    where_clause,
    zone,
)
from avila.schemas.analytics import CohortQuery
from avila.storage.base import Store

_PERIOD_DAYS = {"day": 1, "week": 7, "month": 31}


def retention(
    store: Store, project_id: str, query: CohortQuery | Mapping[str, Any]
) -> dict[str, Any]:
    """``{"period", "periods", "mode", "timezone", "cohorts": [{"cohort_start", "size",
    "retained": [n0, ...], "rates": [1.0, ...]}]}``; ``cohort_start`` is the local date."""
    q = parse_query(CohortQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    true = Expr("TRUE")
    start_c = condition_expr(store, q.start_event, "start_event") if q.start_event else true
    return_c = condition_expr(store, q.return_event, "return_event") if q.return_event else true
    base = where_clause(store, project_id, None, None, q.filters)
    horizon = end + timedelta(days=_PERIOD_DAYS[q.period] * (q.periods + 2))
    first_local = local_us_expr(store, "first_ts", tz, start, horizon)
    ret_local = local_us_expr(store, "ts", tz, start, horizon)
    bucket = bucket_expr(store, "loc", q.period)
    last = q.periods - 1
    if q.mode == "exact":
        offsets = (
            "SELECT c, b - c AS k, count(DISTINCT user_id) AS n FROM cohort JOIN acts "
            "USING (user_id) WHERE b > c AND b - c <= ? GROUP BY c, b - c"
        )
        acts_bound, offset_params = "AND ts < ?", [last]
    else:
        offsets = (
            "SELECT c, k, count(*) AS n FROM (SELECT user_id, c, least(max(b - c), ?) AS k "
            "FROM cohort JOIN acts USING (user_id) WHERE b > c GROUP BY user_id, c) GROUP BY c, k"
        )
        acts_bound, offset_params = "", [last]
    source = events_source(store, project_id)
    sql = f"""
WITH firsts AS (
  SELECT user_id, min(ts) AS first_ts FROM {source}
  WHERE {base.sql} AND ts < ? AND {start_c.sql} GROUP BY user_id
), cohort AS (
  SELECT user_id, {bucket} AS c FROM (
    SELECT user_id, {first_local.sql} AS loc FROM firsts WHERE first_ts >= ?)
), acts AS (
  SELECT DISTINCT user_id, {bucket} AS b FROM (
    SELECT user_id, {ret_local.sql} AS loc FROM {source}
    WHERE {base.sql} AND ts >= ? {acts_bound} AND {return_c.sql})
)
SELECT c, 0 AS k, count(*) AS n FROM cohort GROUP BY c
UNION ALL
{offsets}
"""
    params: list[Any] = [*base.params, end, *start_c.params, *first_local.params, start]
    params += [*ret_local.params, *base.params, start]
    params += [horizon] if q.mode == "exact" else []
    params += [*return_c.params, *offset_params]
    rows = store.query(sql, params)

    sizes: dict[int, int] = {}
    counts: dict[int, list[int]] = {}
    for c, k, n in rows:
        if k == 0:
            sizes[int(c)] = int(n)
        else:
            counts.setdefault(int(c), [0] * q.periods)[int(k)] += int(n)
    cohorts = []
    for c in sorted(sizes):
        retained = counts.get(c, [0] * q.periods)
        retained[0] = sizes[c]
        if (
            q.mode == "on_or_after"
        ):  # users counted at their last active period k count for all <= k
            for k in range(q.periods - 2, 0, -1):
                retained[k] += retained[k + 1]
        cohorts.append(
            {
                "cohort_start": bucket_label(c, q.period),
                "size": sizes[c],
                "retained": retained,
                "rates": [rate(n, sizes[c]) for n in retained],
            }
        )
    return {
        "period": q.period,
        "periods": q.periods,
        "mode": q.mode,
        "timezone": q.timezone,
        "cohorts": cohorts,
    }
