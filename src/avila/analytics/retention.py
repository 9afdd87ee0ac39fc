"""Cohort retention (first-time cohorts, calendar buckets).

Semantics (shared/REFERENCES.md, "Retention"): a user's cohort is the period (day, ISO week
starting Monday, or month, as wall time in ``timezone``) of their first-ever qualifying
``start_event``; users whose first qualifying event lies in ``[start_time, end_time)`` are
included. Retained at period k (``exact``) = cohort users with at least one ``return_event`` in
period P0 + k; ``on_or_after`` = at least one return event in any period >= k (no upper bound).
Period 0 is the whole cohort by definition. ``retained``/``rates`` have ``periods`` entries
(k = 0 .. periods-1); periods that have not happened yet report 0. ``periods_observed`` (per
cohort) is how many of those periods began before ``end_time``: period P0 + k counts when some
instant before ``end_time`` has a wall time (in ``timezone``) at or after the period's local
start, i.e. k <= B - P0 for B the latest bucket reached before ``end_time``
(:func:`last_begun_bucket`); a period beginning exactly at ``end_time`` does not count, the
period running at ``end_time`` does. Entries from ``periods_observed`` on are no measurement of
the range (the dashboard leaves them blank). Only non-empty cohorts are listed. Missing
``start_event``/``return_event`` mean "any event". ``filters`` apply to both.

How: one hash aggregation per user over the project's events before the horizon gives the
user's first qualifying time and their return periods (:func:`_per_user_sql`): ``exact`` keeps
the periods as bits of a 63-bit mask (one bit per period from the one before ``start_time``'s),
``on_or_after`` only the last period. The users are then counted per (cohort, mask) and the
masks expanded with numpy. Only when an ``exact`` question spans more than 63 periods does it
take the older plan (first times, distinct (user, period) pairs, a join). Sorting or joining
millions of users by their string id is what made retention grow faster than the data.

The default question (any event, no filters, UTC, bounds at midnight) reads the daily
rollups' user days (:mod:`avila.storage.rollups`: a row per user and day active) instead of
the events, when they agree with the events table: the same aggregation over a fraction of
the rows, and the same answer (:func:`_user_days` says when).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from avila.analytics.calendar import (
    bucket_expr,
    bucket_label,
    bucket_of,
    local_us_expr,
    utc_offsets,
)
from avila.analytics.common import (
    Expr,
    condition_expr,
    events_source,
    fragments,
    naive_utc,
    parse_query,
    rate,
    shifted,
    time_range,
    where_clause,
    zone,
)
from avila.analytics.rollup_reads import EARLIEST, user_days_answer
from avila.schemas.analytics import CohortQuery
from avila.storage.base import Store

_PERIOD_DAYS = {"day": 1, "week": 7, "month": 31}
#: Bits of the per-user period mask: a 64-bit integer without its top bit (ClickHouse's
#: bitShiftLeft of a Nullable gives a signed Int64, where bit 63 would be the sign).
MASK_BITS = 63
_UTC = ZoneInfo("UTC")


def retention(
    store: Store, project_id: str, query: CohortQuery | Mapping[str, Any], *, raw: bool = False
) -> dict[str, Any]:
    """``{"period", "periods", "mode", "timezone", "cohorts": [{"cohort_start", "size",
    "retained": [n0, ...], "rates": [1.0, ...]}]}``; ``cohort_start`` is the local date.
    The user days of the daily rollups stand in for the events when that cannot change the
    answer (:func:`_user_days`); ``raw`` reads the events in any case."""
    q = parse_query(CohortQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    true = Expr("TRUE")
    start_c = condition_expr(store, q.start_event, "start_event") if q.start_event else true
    return_c = condition_expr(store, q.return_event, "return_event") if q.return_event else true
    base = where_clause(store, project_id, None, None, q.filters)
    horizon = shifted(end, timedelta(days=_PERIOD_DAYS[q.period] * (q.periods + 2)))
    first_local = local_us_expr(store, "first_ts", tz, start, horizon)
    ret_local = local_us_expr(store, "ts", tz, start, horizon)
    bucket = bucket_expr(store, "loc", q.period)
    last = q.periods - 1
    # Periods before start_time's can only be reached through a DST shift (< 1 period).
    lo = bucket_of(start, tz, q.period) - 1
    span = bucket_of(end - timedelta(microseconds=1), tz, q.period) - lo + last
    if q.mode == "on_or_after" or span < MASK_BITS:
        days = None if raw else _user_days(store, project_id, q, (start, end, horizon), tz)
        source = days or events_source(store, project_id)
        per_cohort = _per_user_counts(
            store, source, q.mode, (start, end, horizon), (start_c, return_c), base,
            (first_local, ret_local, bucket), lo, last,
        )  # fmt: skip
        return _report(q, per_cohort, last_begun_bucket(end, tz, q.period))
    # exact mode over more than MASK_BITS periods: first times, (user, period) pairs, a join.
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
    WHERE {base.sql} AND ts >= ? AND ts < ? AND {return_c.sql})
)
SELECT c, 0 AS k, count(*) AS n FROM cohort GROUP BY c
UNION ALL
SELECT c, b - c AS k, count(DISTINCT user_id) AS n FROM cohort JOIN acts USING (user_id)
WHERE b > c AND b - c <= ? GROUP BY c, b - c
"""
    params: list[Any] = [*base.params, end, *start_c.params, *first_local.params, start]
    params += [*ret_local.params, *base.params, start, horizon, *return_c.params, last]
    sizes: dict[int, int] = {}
    counts: dict[int, list[int]] = {}
    for c, k, n in store.query(sql, params):
        if k == 0:
            sizes[int(c)] = int(n)
        else:
            counts.setdefault(int(c), [0] * q.periods)[int(k)] += int(n)
    per_cohort = {c: (size, counts.get(c, [0] * q.periods)) for c, size in sizes.items()}
    return _report(q, per_cohort, last_begun_bucket(end, tz, q.period))


def last_begun_bucket(end: datetime, tz: ZoneInfo, period: str) -> int:
    """The latest ``period`` bucket (as :func:`bucket_expr` numbers them) that any instant
    before ``end`` (naive UTC) falls in, in wall time of ``tz``: the bucket of the microsecond
    before ``end``, or of the one before a backward clock change shortly before ``end`` that
    had already reached a later bucket (St. John's fell back from 00:01 to 23:01 until 2010).
    Local times come from the same offset pieces as the SQL's (:func:`utc_offsets`)."""
    epoch = datetime(1970, 1, 1)
    end_us = (naive_utc(end) - epoch) // timedelta(microseconds=1)
    # A clock change moves wall time by less than two days: older ones cannot be ahead of end.
    pieces = utc_offsets(tz, shifted(end, -timedelta(days=2)), end)
    # Wall time of the microsecond before end, and of the last microsecond of every offset piece
    # that ended by then (the first piece reaches back to -inf: its start is no boundary).
    current = [o for at, o in pieces[1:] if at < end_us]
    walls = [end_us - 1 + (current[-1] if current else pieces[0][1])]
    walls += [
        at - 1 + before
        for (_, before), (at, _) in zip(pieces, pieces[1:], strict=False)
        if at <= end_us
    ]
    return bucket_of(epoch + timedelta(microseconds=max(walls)), _UTC, period)


def _user_days(
    store: Store,
    project_id: str,
    q: CohortQuery,
    bounds: tuple[datetime, datetime, datetime],
    tz: ZoneInfo,
) -> str | None:
    """The user days (:data:`USER_DAYS`, mapped to persons with identity links) when they give
    exactly the events' answer, else None: the question is about any event (no start or return
    event, no filters) and its bounds are UTC midnights (every comparison and period boundary
    then treats a day's events alike), and the user days can stand in for the events of every
    day before the horizon (:func:`user_days_answer`)."""
    start, end, horizon = bounds
    if q.start_event or q.return_event or q.filters:
        return None
    if any(t != datetime.combine(t.date(), datetime.min.time()) for t in bounds):
        return None
    return user_days_answer(store, project_id, tz, start, horizon, read_from=EARLIEST)


def _per_user_counts(
    store: Store,
    source: str,
    mode: str,
    bounds: tuple[Any, Any, Any],
    conds: tuple[Expr, Expr],
    base: Expr,
    exprs: tuple[Expr, Expr, str],
    lo: int,
    last: int,
) -> dict[int, tuple[int, list[int]]]:
    """``{cohort: (size, users retained at k = 0 .. last)}`` from one aggregation per user
    over ``source`` (see the module docstring); ``lo`` is the bucket of mask bit 0 (exact
    mode)."""
    start, end, horizon = bounds
    start_c, return_c = conds
    first_local, ret_local, bucket = exprs
    frag = fragments(store)
    if mode == "exact":
        offset = f"b - {lo}"
        # Clamped as well: ClickHouse evaluates a CASE branch on every row.
        bit = frag["bit"].format(f"least(greatest({offset}, 0), {MASK_BITS - 1})")
        act = frag["bit_or_agg"].format(
            f"CASE WHEN {offset} >= 0 AND {offset} < {MASK_BITS} THEN {bit} END"
        )
        # The bits of periods c + 1 .. c + last: act // 2^(c - lo + 1) % 2^last.
        shifted = frag["int_div"].format("coalesce(act, 0)", frag["bit"].format(f"c - {lo} + 1"))
        key = f"{shifted} % {frag['bit'].format(last)}"
        upto, upto_params = "AND ts < ?", [horizon]
    else:
        act = "max(b)"
        key = f"CASE WHEN act > c THEN least(act - c, {last}) ELSE 0 END"
        upto, upto_params = "", []
    sql = f"""
WITH u AS (
  SELECT min(ts) FILTER (WHERE ts < ? AND sc) AS first_ts, {act} AS act FROM (
    SELECT user_id, ts, sc, {bucket} AS b FROM (
      SELECT user_id, ts, {start_c.sql} AS sc,
        CASE WHEN ts >= ? {upto} AND {return_c.sql} THEN {ret_local.sql} END AS loc
      FROM {source} WHERE {base.sql}))
  GROUP BY user_id
), c AS (
  SELECT {bucket} AS c, act FROM (
    SELECT {first_local.sql} AS loc, act FROM u WHERE first_ts >= ?)
)
SELECT c, {key} AS k, count(*) AS n FROM c GROUP BY c, k
"""
    params: list[Any] = [end, *start_c.params, start, *upto_params, *return_c.params]
    params += [*ret_local.params, *base.params, *first_local.params, start]
    table = store.query_arrow(sql, params)
    cohort = np.asarray(table.column("c").to_numpy(), dtype=np.int64)
    key_v = np.asarray(table.column("k").to_numpy(), dtype=np.uint64)
    n = np.asarray(table.column("n").to_numpy(), dtype=np.int64)
    out: dict[int, tuple[int, list[int]]] = {}
    for c in np.unique(cohort).tolist():
        sel = cohort == c
        kv, nv = key_v[sel], n[sel]
        retained = [0] * (last + 1)
        for k in range(1, last + 1):
            if mode == "exact":
                hit = ((kv >> np.uint64(k - 1)) & np.uint64(1)).astype(bool)
            else:
                hit = kv == k
            retained[k] = int(nv[hit].sum())
        out[int(c)] = (int(nv.sum()), retained)
    return out


def _report(
    q: CohortQuery, per_cohort: dict[int, tuple[int, list[int]]], last_begun: int
) -> dict[str, Any]:
    """The response; ``last_begun`` is :func:`last_begun_bucket` of the range's end."""
    cohorts = []
    sizes = {c: size for c, (size, _) in per_cohort.items()}
    counts = {c: list(retained) for c, (_, retained) in per_cohort.items()}
    for c in sorted(sizes):
        retained = counts[c]
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
                "periods_observed": max(0, min(q.periods, last_begun - c + 1)),
            }
        )
    return {
        "period": q.period,
        "periods": q.periods,
        "mode": q.mode,
        "timezone": q.timezone,
        "cohorts": cohorts,
    }
