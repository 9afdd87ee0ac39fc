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
from avila.analytics.rollup_reads import EARLIEST, USER_DAYS, user_days_answer
from avila.schemas.analytics import CohortQuery
from avila.storage import user_history
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
        if days == USER_DAYS and store.has_user_history:
            users = _history_users(store, project_id, q, (start, end, horizon), lo)
        else:
            source = days or events_source(store, project_id)
            users = _users(store, source, q.mode, (start, end, horizon), (start_c, return_c),
                           base, (ret_local, bucket), lo)  # fmt: skip
        per_cohort = _cohort_counts(store, users, q.mode, (first_local, bucket), start, lo, last)
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


def _users(
    store: Store,
    source: str,
    mode: str,
    bounds: tuple[Any, Any, Any],
    conds: tuple[Expr, Expr],
    base: Expr,
    exprs: tuple[Expr, str],
    lo: int,
) -> Expr:
    """A row per user of ``source`` (one hash aggregation, see the module docstring):
    ``first_ts`` (their first qualifying time before ``end``) and ``act`` (:func:`_activity`
    of their return periods); ``lo`` is the bucket of mask bit 0 (exact mode)."""
    start, end, horizon = bounds
    start_c, return_c = conds
    ret_local, bucket = exprs
    upto, upto_params = ("AND ts < ?", [horizon]) if mode == "exact" else ("", [])
    act = _activity(store, mode, lo, "b", aggregate=True)
    sql = f"""
  SELECT min(ts) FILTER (WHERE ts < ? AND sc) AS first_ts, {act} AS act FROM (
    SELECT user_id, ts, sc, {bucket} AS b FROM (
      SELECT user_id, ts, {start_c.sql} AS sc,
        CASE WHEN ts >= ? {upto} AND {return_c.sql} THEN {ret_local.sql} END AS loc
      FROM {source} WHERE {base.sql}))
  GROUP BY user_id"""
    params: list[Any] = [end, *start_c.params, start, *upto_params, *return_c.params]
    return Expr(sql, (*params, *ret_local.params, *base.params))


def _history_users(
    store: Store,
    project_id: str,
    q: CohortQuery,
    bounds: tuple[datetime, datetime, datetime],
    lo: int,
) -> Expr:
    """:func:`_users` for the default question from the per-user history
    (:data:`avila.storage.user_history.PER_USER`: a row per user with their first day and
    active days, no aggregation by user), only the users first active in ``[start, end)`` (the
    others are in no cohort). Bounds are UTC midnights and local time is UTC over them (the
    caller checked: :func:`_user_days`), so a day stands for its events."""
    start, end, horizon = bounds
    # the day's bucket (its UTC midnight's: local time is UTC here), with no parameter: the
    # expression is repeated in the mask bit's
    midnight = fragments(store)["epoch_us"].format("CAST(d AS TIMESTAMP)")
    one = _activity(store, q.mode, lo, bucket_expr(store, midnight, q.period))
    if q.mode == "exact":
        returns, return_params = "d >= ? AND d < ?", [start.date(), horizon.date()]
        act = f"list_aggregate(list_transform(list_filter(days, lambda d: {returns}),"
        act += f" lambda d: {one}), 'bit_or')"
    else:
        returns, return_params = "d >= ?", [start.date()]
        act = f"list_max(list_transform(list_filter(days, lambda d: {returns}), lambda d: {one}))"
    sql = f"""
  SELECT CAST(first_day AS TIMESTAMP) AS first_ts, {act} AS act FROM {user_history.PER_USER}
  WHERE first_day >= ? AND first_day < ?"""
    params = [*return_params, *[project_id] * 3, start.date(), end.date()]
    return Expr(sql, tuple(params))


def _activity(store: Store, mode: str, lo: int, b: str, *, aggregate: bool = False) -> str:
    """A user's return periods from the bucket ``b`` of each return (NULL: none): ``exact``,
    the bit of ``b`` in the mask from bucket ``lo``, ``on_or_after`` the bucket; ``aggregate``:
    over the user's rows (``bit_or``, ``max``), else of one return."""
    frag = fragments(store)
    if mode != "exact":
        return f"max({b})" if aggregate else b
    offset = f"{b} - {lo}"
    # Clamped as well: ClickHouse evaluates a CASE branch on every row.
    bit = frag["bit"].format(f"least(greatest({offset}, 0), {MASK_BITS - 1})")
    one = f"CASE WHEN {offset} >= 0 AND {offset} < {MASK_BITS} THEN {bit} END"
    return frag["bit_or_agg"].format(one) if aggregate else one


def _cohort_counts(
    store: Store,
    users: Expr,
    mode: str,
    exprs: tuple[Expr, str],
    start: datetime,
    lo: int,
    last: int,
) -> dict[int, tuple[int, list[int]]]:
    """``{cohort: (size, users retained at k = 0 .. last)}`` from ``users`` (a row per user:
    ``first_ts``, ``act``, :func:`_users`): the users are counted per (cohort, mask) in SQL and
    the masks expanded with numpy; ``lo`` is the bucket of mask bit 0 (exact mode)."""
    first_local, bucket = exprs
    frag = fragments(store)
    if mode == "exact":
        # The bits of periods c + 1 .. c + last: act // 2^(c - lo + 1) % 2^last.
        shifted = frag["int_div"].format("coalesce(act, 0)", frag["bit"].format(f"c - {lo} + 1"))
        key = f"{shifted} % {frag['bit'].format(last)}"
    else:
        key = f"CASE WHEN act > c THEN least(act - c, {last}) ELSE 0 END"
    sql = f"""
WITH u AS ({users.sql}
), c AS (
  SELECT {bucket} AS c, act FROM (
    SELECT {first_local.sql} AS loc, act FROM u WHERE first_ts >= ?)
)
SELECT c, {key} AS k, count(*) AS n FROM c GROUP BY c, k
"""
    table = store.query_arrow(sql, [*users.params, *first_local.params, start])
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
