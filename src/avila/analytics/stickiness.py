"""Stickiness: users by the number of days they were active within each week or month.

Periods are ISO weeks (Monday) or calendar months as wall time in ``timezone``; the report
covers every period that overlaps ``[start_time, end_time)``, each evaluated whole (like
:mod:`avila.analytics.lifecycle`). A user is active on a local calendar day when they have at
least one event that day matching ``event`` (any event when omitted) and ``filters``; days are
wall-clock days, so a DST-change day (23 or 25 hours) is one day.

For each period, ``distribution`` counts the users active on exactly n distinct days of it,
n = 1 .. 7 (week) or 1 .. 31 (month), every n listed (zeros included). The top-level
``distribution`` sums the periods: a user active in two weeks counts once in each week (as
Amplitude's weekly stickiness does), so its total is ``user_periods``. PostHog's stickiness is
the one-period case: ask for a single week or month.

Computed in one SQL query: per (user, period) the OR of one bit per active local day (day of
week or of month), its population count is the number of active days, then users per count
(measured cheaper than counting distinct (user, period, day) rows); by week the bits are OR-ed
per user and group of :data:`WEEKS_PER_GROUP` weeks and each week's seven counted after, fewer
groups to aggregate (:func:`_weeks_in_groups`). For a question about any
event without filters, in UTC, in a project without identity links, the per-user history's
rows (:data:`avila.storage.user_history.PER_USER`: a row per user with their active days) give
each user's bits of every reported period in one 127-bit integer (:func:`_history_sql`: up to
18 weeks or 4 months), so nothing is aggregated by user: that aggregation's hash table outgrows
the caches at 100 M events and made the cost grow faster than the rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from avila.analytics.calendar import (
    bucket_dates,
    bucket_expr,
    bucket_label,
    bucket_of,
    local_us_expr,
)
from avila.analytics.common import (
    Expr,
    condition_expr,
    events_source,
    fragments,
    shifted,
    time_range,
    where_clause,
    zone,
)
from avila.analytics.lifecycle import PERIOD_DAYS, period_span
from avila.analytics.query import parse_explained
from avila.analytics.rollup_reads import USER_DAYS, user_days_answer
from avila.schemas.analytics import StickinessQuery
from avila.storage import user_history
from avila.storage.base import Store

MAX_ACTIVE_DAYS = {"week": 7, "month": 31}
#: Weeks OR-ed into one integer per user on the events path (9 weeks of 7 days: 63 bits).
WEEKS_PER_GROUP = 9
#: The bits of the history path's per-user integer (a HUGEINT: its sign bit left alone).
HISTORY_BITS = 127
#: A multiple of 7 larger than the days from year 1 to 1970 (719,162).
_WEEK_SHIFT = 7 * 200_000


def stickiness(
    store: Store,
    project_id: str,
    query: StickinessQuery | Mapping[str, Any],
    *,
    raw: bool = False,
) -> dict[str, Any]:
    """``{"period", "timezone", "user_periods", "distribution": [{"active_days", "users"}],
    "periods": [{"period_start", "active_users", "distribution": [...]}]}``. Without an
    ``event`` or filters, in UTC, the daily rollups' user days stand in for the events
    (:data:`avila.analytics.rollup_reads.USER_DAYS`; the same answer, checked first); ``raw``
    reads the events in any case."""
    q = parse_explained(StickinessQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    lo, hi = period_span(
        q.period,
        bucket_of(start, tz, q.period),
        bucket_of(end - timedelta(microseconds=1), tz, q.period),
    )
    margin = timedelta(days=PERIOD_DAYS[q.period] + 2)
    scan_lo, scan_hi = shifted(start, -margin), shifted(end, margin)
    cond = condition_expr(store, q.event, "event") if q.event else Expr("TRUE")
    where = where_clause(store, project_id, scan_lo, scan_hi, q.filters)
    local = local_us_expr(store, "ts", tz, scan_lo, scan_hi)
    frag = fragments(store)
    period_bucket = bucket_expr(store, "loc", q.period)
    day = bucket_expr(store, "loc", "day")
    # Position of the local day inside its period: Monday = 0 (1970-01-01 was a Thursday), or
    # day of the month - 1. The day number is negative before 1970, where both engines' % is
    # negative too (a negative shift is an error): shifted by a multiple of 7 past year 1 first.
    index = (
        f"(({day} + {_WEEK_SHIFT + 3}) % 7)"
        if q.period == "week"
        else frag["day_of_month"].format("loc") + " - 1"
    )
    # The scan's partial edge days lie outside every reported period (its margins are longer
    # than a period): whole days of user activity give the same bits.
    days = None
    if not (raw or q.event or q.filters):
        days = user_days_answer(store, project_id, tz, scan_lo, scan_hi)
    history = days == USER_DAYS and store.has_user_history and _history_fits(q.period, lo, hi)
    # the first day of each period and of the one after (None at the end of the calendar)
    starts = bucket_dates(q.period, *range(lo, hi + 2)) if history else None
    if starts:
        sql, params = _history_sql(project_id, q.period, lo, starts)
    else:
        source = days or events_source(store, project_id)
        active = (
            f"SELECT user_id, {period_bucket} AS b, {index} AS i FROM (SELECT user_id,"
            f" {local.sql} AS loc FROM {source} WHERE {where.sql} AND {cond.sql})"
        )
        params = [*local.params, *where.params, *cond.params]
        if q.period == "week":
            sql, params = _weeks_in_groups(frag, active, params, lo, hi)
        else:
            sql = f"""
SELECT b, {frag["popcount"].format("days")} AS n, count(*) FROM (
  SELECT user_id, b, {frag["bit_or_agg"].format(frag["bit"].format("i"))} AS days
  FROM ({active}) AS a WHERE b BETWEEN ? AND ? GROUP BY user_id, b) AS p
GROUP BY b, n
"""
            params += [lo, hi]
    most = MAX_ACTIVE_DAYS[q.period]
    per_period = {b: [0] * most for b in range(lo, hi + 1)}
    for b, days, users in store.query(sql, params):
        per_period[int(b)][int(days) - 1] = int(users)
    total = [sum(per_period[b][i] for b in per_period) for i in range(most)]
    return {
        "period": q.period,
        "timezone": q.timezone,
        "user_periods": sum(total),
        "distribution": _rows(total),
        "periods": [
            {
                "period_start": bucket_label(b, q.period),
                "active_users": sum(per_period[b]),
                "distribution": _rows(per_period[b]),
            }
            for b in range(lo, hi + 1)
        ],
    }


def _weeks_in_groups(
    frag: dict[str, str], active: str, params: list[Any], lo: int, hi: int
) -> tuple[str, list[Any]]:
    """The events path by week: ``active`` (``user_id``, week ``b``, day of the week ``i``)
    OR-ed per user and group of :data:`WEEKS_PER_GROUP` weeks (7 bits a week), then each
    week's bits counted. A fifth as many groups as (user, week) for a 30-day question: that
    hash table is the cost at 100 M events (benchmarks/RESULTS.md, "Stickiness by week in
    groups of weeks")."""
    per = WEEKS_PER_GROUP
    week = frag["int_div"].format("b - ?", per)
    day_bit = frag["bit"].format(f"(b - ? - {week} * {per}) * 7 + i")
    days_of_week = frag["bits_of"].format("days", "(r.i - 1) * 7", (1 << 7) - 1)
    sql = f"""
SELECT ? + g * {per} + j AS b, n, count(*) FROM (
  SELECT g, r.i - 1 AS j, {frag["popcount"].format(days_of_week)} AS n FROM (
    SELECT user_id, {week} AS g,
      {frag["bit_or_agg"].format(day_bit)} AS days
    FROM ({active}) AS a WHERE b BETWEEN ? AND ? GROUP BY user_id, g) AS groups,
    {frag["series_from_1"].format(per + 1)}) AS w
WHERE n > 0 GROUP BY g, j, n
"""
    return sql, [lo, lo, lo, lo, *params, lo, hi]


def _history_fits(period: str, lo: int, hi: int) -> bool:
    return (hi - lo + 1) * MAX_ACTIVE_DAYS[period] <= HISTORY_BITS


def _history_sql(
    project_id: str, period: str, lo: int, starts: list[date]
) -> tuple[str, list[Any]]:
    """The stickiness statement over the per-user history (DuckDB; UTC, any event, no links:
    the caller checked that the user days stand in for the events). Period ``lo + j``'s days
    are bits ``j * width`` on (width 7 or 31: day of the week or of the month), so each
    period's active days are a population count of its slice of the user's integer; users
    without a day in a period are left out of its counts, as the events' aggregate leaves
    them. ``starts``: the first days of periods ``lo`` .. ``hi + 1``."""
    first, after = starts[0], starts[-1]
    width = MAX_ACTIVE_DAYS[period]
    # A day's bit: its distance from ``first``; by month, plus the bits the months before its
    # own leave unused (31 - their length): a subtraction and a few comparisons per day
    # (extracting year, month and day of each day took twice as long as the whole query).
    bit, bit_params = "(d - ?)", [first]
    if period == "month":
        unused = itertools.accumulate(31 - (b - a).days for a, b in itertools.pairwise(starts))
        later = list(zip(starts[1:-1], unused, strict=False))  # (a later month's start, pad)
        if later:
            cases = " ".join(f"WHEN d >= ? THEN {pad}" for _, pad in reversed(later))
            bit = f"((d - ?) + CASE {cases} ELSE 0 END)"
            bit_params += [month for month, _ in reversed(later)]
    sql = f"""
SELECT ? + j AS b, n, count(*) FROM (
  SELECT j, bit_count((bits >> (j * {width})) & ?::HUGEINT) AS n FROM (
    SELECT list_bit_or(list_transform(list_filter(days, lambda d: d >= ? AND d < ?),
                                      lambda d: 1::HUGEINT << {bit})) AS bits
    FROM {user_history.PER_USER}) AS users, range(?) AS periods(j)
  WHERE bits <> 0)
WHERE n > 0 GROUP BY j, n
"""
    periods = len(starts) - 1
    params = [lo, (1 << width) - 1, first, after, *bit_params, *[project_id] * 3, periods]
    return sql, params


def _rows(counts: list[int]) -> list[dict[str, int]]:
    return [{"active_days": i + 1, "users": n} for i, n in enumerate(counts)]
