"""User lifecycle: new, returning, resurrecting and dormant users per period (PostHog's
definitions, as in its lifecycle query).

Periods are calendar days, ISO weeks (Monday) or months as wall time in ``timezone``; the
report covers every period that overlaps ``[start_time, end_time)``, each evaluated whole (as
PostHog does: the first and last periods are not clipped to the range). A user is *active* in a
period when they have at least one event there matching ``event`` (any event when omitted) and
``filters``. A user's *first seen* time is their first event of any kind ever in the project,
ignoring ``event`` and ``filters`` (PostHog uses the person's creation time, which is when the
person's first event arrived). For each reported period P:

* **new**: active in P, and first seen in P;
* **returning**: active in P and in the period before P;
* **resurrecting**: active in P, not active in the period before, and first seen before P
  (so, without ``event``/``filters``, active at some time before P; with them, a user seen
  earlier doing something else also resurrects, exactly as in PostHog);
* **dormant**: active in the period before P and not active in P. **Reported as a negative
  number** (PostHog's convention, so a stacked chart draws it below zero).

Every active user is exactly one of new, returning or resurrecting; ``active`` is their sum.
Users are identity-stitched persons (the same relation as every analytics query).

Computed in one SQL query, in one of four shapes with the same result. Up to
:data:`BITSET_MAX_PERIODS` periods: one aggregate per user over the history gives the first
event and a bit set of active periods (an integer's bits), and each period's status is read
off the bits of each distinct (bits, first period) pattern (cost: one scan plus patterns x
periods bit reads); for a question about any event without filters or identity links the
per-user history's rows give both without the aggregate (a row per user: first day and active
days), in UTC alone and, by week or month away from UTC, with the events of the UTC days that
straddle two local periods. Beyond: distinct (user, period) activity, the previous and next
active period of each (``lag``/``lead``) and each user's first event (cost grows with active
user-periods, not with periods). The first event is aggregated over the whole history without
a semi-join to the active users (measured cheaper), and is only compared when it falls inside
the scanned window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from avila.analytics.calendar import (
    bucket_dates,
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
    invalid,
    shifted,
    time_range,
    where_clause,
    zone,
)
from avila.analytics.query import parse_explained
from avila.analytics.rollup_reads import (
    EARLIEST,
    USER_DAYS,
    covering_days,
    rollups_agree,
    user_days_answer,
)
from avila.schemas.analytics import LifecycleQuery
from avila.storage import rollups, user_history
from avila.storage.base import Store

#: The longest length of a period, in days (a month), for the scan margins.
PERIOD_DAYS = {"day": 1, "week": 7, "month": 31}
#: More periods than any chart can show.
MAX_PERIODS = 1000
#: Up to this many periods (reported ones plus the one before) the bit-set query is used.
BITSET_MAX_PERIODS = 64
STATUSES = ("new", "returning", "resurrecting", "dormant")


@dataclass(frozen=True)
class _Parts:
    source: str
    frag: dict[str, str]
    active: Expr  # the row counts as activity (range window, filters, event)
    local: Expr  # local wall-clock microseconds of ts
    first_local: Expr  # the same for first_ts
    bucket: str  # period of the column loc
    period: str
    project_id: str
    scan_lo: datetime
    scan_hi: datetime
    lo: int
    hi: int
    #: With the per-user history (:func:`_seen_before`): the keys of the users seen before
    #: ``scan_from`` (the scan's first midnight), whose first events need not be read.
    seen_before: Expr | None = None
    scan_from: datetime | None = None


def _activity_sql(p: _Parts) -> tuple[str, list[Any]]:
    """Distinct (user, period) rows, lag/lead over them, and first-seen periods: scales with
    the number of active user-periods (any number of periods). ``seen`` tells a user first
    seen in the scan window: ClickHouse's LEFT JOIN fills a missing row with 0, not NULL, and
    an ``f`` of 0 would make every earlier user "new" in period 0 (1970-01-01's)."""
    sql = f"""
WITH acts AS (
  SELECT DISTINCT user_id, b FROM (
    SELECT user_id, {p.bucket} AS b FROM (
      SELECT user_id, {p.local.sql} AS loc FROM {p.source} WHERE {p.active.sql}))
  WHERE b BETWEEN ? AND ?
), seq AS {p.frag["cte_materialized"]} (
  SELECT user_id, b, {p.frag["lag"].format("b")} OVER w AS pb,
    {p.frag["lead"].format("b")} OVER w AS nb FROM acts
  WINDOW w AS (PARTITION BY user_id ORDER BY b)
), first_period AS (
  SELECT user_id, {p.bucket} AS f, 1 AS seen FROM (
    SELECT user_id, {p.first_local.sql} AS loc FROM (
      SELECT user_id, min(ts) AS first_ts FROM {p.source}
      WHERE project_id = ? AND ts < ? GROUP BY user_id)
    WHERE first_ts >= ?)
)
SELECT b, CASE WHEN first_period.seen = 1 AND first_period.f = b THEN 'new'
  WHEN pb = b - 1 THEN 'returning'
  ELSE 'resurrecting' END AS status, count(*)
FROM seq LEFT JOIN first_period ON first_period.user_id = seq.user_id
WHERE b >= ? GROUP BY 1, 2
UNION ALL
SELECT b + 1, 'dormant', count(*) FROM seq
WHERE (nb IS NULL OR nb > b + 1) AND b + 1 BETWEEN ? AND ? GROUP BY 1
"""
    params: list[Any] = [*p.local.params, *p.active.params, p.lo - 1, p.hi]
    params += [*p.first_local.params, p.project_id, p.scan_hi, p.scan_lo, p.lo, p.lo, p.hi]
    return sql, params


def _bitset_sql(p: _Parts) -> tuple[str, list[Any]]:
    """One aggregate per user over the history: first event and a bit set of active periods
    (bit i = period lo - 1 + i), then each period read off the bits. Scales with users times
    periods, so it is used for up to :data:`BITSET_MAX_PERIODS` periods."""
    n = p.hi - p.lo + 2
    # Each user's first event: over the whole history, or (``seen_before``) over the scan from
    # its first midnight, for the users not seen before it (the others' is before the scan).
    since, since_params = ("", []) if p.seen_before is None else ("AND ts >= ?", [p.scan_from])
    per_user = f"""
  SELECT user_id, min(ts) AS first_ts,
    {p.frag["bitset_agg"].format("b - ?", "0", "?")} FILTER (WHERE active AND b BETWEEN ? AND ?)
      AS bits
  FROM (
    SELECT user_id, ts, active, {p.bucket} AS b FROM (
      SELECT user_id, ts, {p.active.sql} AS active,
        CASE WHEN ts >= ? THEN {p.local.sql} END AS loc
      FROM {p.source} WHERE project_id = ? {since} AND ts < ?))
  GROUP BY user_id"""
    params: list[Any] = [p.lo - 1, n - 1, p.lo - 1, p.hi, *p.active.params, p.scan_lo]
    params += [*p.local.params, p.project_id, *since_params, p.scan_hi]
    if p.seen_before is not None:
        per_user = f"""
  SELECT bits, CASE WHEN {rollups.USER_KEY} IN ({p.seen_before.sql}) THEN NULL ELSE first_ts END
    AS first_ts FROM ({per_user})"""
        params = [*p.seen_before.params, *params]
    sql = f"""
WITH per_user AS ({per_user}
), users AS (
  SELECT bits, {p.bucket} - ? AS f FROM (
    SELECT bits, CASE WHEN first_ts >= ? THEN {p.first_local.sql} END AS loc
    FROM per_user WHERE bits IS NOT NULL)
{_statuses(p)}"""
    params += [p.lo - 1, p.scan_lo, *p.first_local.params, n - 1, n]
    return sql, params


def _statuses(p: _Parts) -> str:
    """The end of the bit-set queries: from ``users`` (a row per user: ``bits``, their active
    periods' bit set, bit i = period lo - 1 + i, NULL when none; ``f``, the bit of their first
    period), rows ``(i, status, users)`` for the periods i = 1 .. n - 1. Users with the same
    bits and first period (within 1 .. n - 1, else 0) are counted once before the bits are
    read: fewer rows than users (at 100 M events in UTC, by day 698 k patterns for 1.9 M users,
    by week 66 k for 2.9 M).
    Parameters: n - 1, then n."""
    bit = p.frag["bit_at"]
    return f"""), patterns AS (
  SELECT bits, first_bit, count(*) AS w FROM (
    SELECT bits, CASE WHEN f BETWEEN 1 AND ? THEN f ELSE 0 END AS first_bit
    FROM users WHERE bits IS NOT NULL)
  GROUP BY bits, first_bit
), cells AS (
  SELECT i, {bit.format("bits", "i")} AS cur, {bit.format("bits", "i - 1")} AS prev,
    first_bit, w
  FROM patterns, {p.frag["series_from_1"].format("?")}
)
SELECT i, CASE WHEN cur = 0 THEN 'dormant' WHEN first_bit = i THEN 'new'
  WHEN prev = 1 THEN 'returning'
  ELSE 'resurrecting' END AS status, sum(w)
FROM cells WHERE cur = 1 OR prev = 1 GROUP BY 1, 2
"""


def _history_sql(p: _Parts, first: date, after: date) -> tuple[str, list[Any]]:
    """:func:`_bitset_sql` for the default question (any event, no filters, UTC, no identity
    links) from the per-user history (:data:`avila.storage.user_history.PER_USER`: a row per
    user with their first day and active days), as retention's default question reads it: no
    aggregation by user. Local time is UTC (the caller checked), so a day's period is its
    events' and the first day's the first event's. The bits are an integer's (at most
    :data:`BITSET_MAX_PERIODS` of them), numbered from ``first``, the first day of period
    ``lo - 1``, to ``after``, the first of period ``hi + 1``."""
    n = p.hi - p.lo + 2
    # A day's bit: its period's distance from period lo - 1 (days before ``first`` give a
    # negative or zero one, never a reported period's).
    distance, base = {
        "day": ("({0} - ?)", first),
        "week": ("(({0} - ?) // 7)", first),
        "month": ("(year({0}) * 12 + month({0}) - ?)", first.year * 12 + first.month),
    }[p.period]
    bit = p.frag["bit"].format(distance.format("d"))
    bits = "list_bit_or(list_transform(list_filter(days, lambda d: d >= ? AND d < ?),"
    bits += f" lambda d: {bit}))"
    sql = f"""
WITH users AS (
  SELECT {bits} AS bits, {distance.format("first_day")} AS f FROM {user_history.PER_USER}
{_statuses(p)}"""
    params: list[Any] = [first, after, base, base, *[p.project_id] * 3, n - 1, n]
    return sql, params


@dataclass(frozen=True)
class _ZonedDays:
    """The UTC days of a zoned question's scan, from ``first``: ``bits[k]`` is the bit of the
    local period that holds all of day ``first + k`` (-1: a day in no period lo - 1 .. hi;
    None: a day that straddles periods, one of them reported, whose events are read)."""

    first: date
    bits: list[int | None]

    @property
    def straddling(self) -> list[date]:
        return [self.first + timedelta(k) for k, b in enumerate(self.bits) if b is None]


def _zoned_days(p: _Parts, tz: ZoneInfo) -> _ZonedDays | None:
    """:class:`_ZonedDays` of the scan window (None at the ends of the calendar, where the
    days after it do not exist). Within a stretch of constant UTC offset local time only moves
    forward, so a day lies in one period when the ends of its stretches do."""
    try:
        return _days_in_periods(p, tz)
    except (OverflowError, ValueError):
        return None


def _days_in_periods(p: _Parts, tz: ZoneInfo) -> _ZonedDays:
    first, last = p.scan_lo.date(), p.scan_hi.date()
    changes = [
        datetime(1970, 1, 1) + timedelta(microseconds=at)
        for at, _ in utc_offsets(tz, p.scan_lo, p.scan_hi)[1:]
    ]
    bits: list[int | None] = []
    for k in range((last - first).days + 1):
        day = datetime.combine(first + timedelta(k), time())
        cuts = [day, *(c for c in changes if day < c < day + timedelta(1)), day + timedelta(1)]
        periods = {
            bucket_of(at, tz, p.period)
            for a, b in zip(cuts, cuts[1:], strict=False)
            for at in (a, b - timedelta(microseconds=1))
        }
        if not any(p.lo - 1 <= b <= p.hi for b in periods):
            bits.append(-1)
        else:
            bits.append(periods.pop() - (p.lo - 1) if len(periods) == 1 else None)
    return _ZonedDays(first, bits)


def _zoned_history_sql(p: _Parts, days: _ZonedDays, events: str) -> tuple[str, list[Any]]:
    """:func:`_history_sql` away from UTC (any event, no filters, no identity links): a day
    that lies in one local period takes its bit from the history's rows; the events of the
    days that straddle periods (``events``: the project's events relation, read a day at a
    time so that the table's order by day skips the rest) are aggregated by user, and give a
    user's first period when their first day is one of them. For weeks that reads one day of
    events in seven instead of the whole scan, and no aggregation by user over the rest."""
    n = p.hi - p.lo + 2
    after = days.first + timedelta(len(days.bits))
    midnights = [datetime.combine(d, time()) for d in days.straddling]
    straddling = " UNION ALL ".join(
        f"SELECT user_id, ts FROM {events} WHERE project_id = ? AND ts >= ? AND ts < ?"
        for _ in midnights
    )
    # A day's bit as a mask (0: a straddling day, or a day in no reported period), and as a
    # number (the first day's: -1 outside the periods, NULL straddling).
    mask_of, bit_of = (
        f"list_extract(?::{kind}[], ({{0}} - ?)::INTEGER + 1)" for kind in ("UBIGINT", "INTEGER")
    )
    masks = [0 if b is None or b < 0 else 1 << b for b in days.bits]
    sql = f"""
WITH boundary AS (
  SELECT {rollups.USER_KEY} AS user_key, min(ts) AS first_ts,
    {p.frag["bitset_agg"].format("b - ?", "0", "?")} FILTER (WHERE b BETWEEN ? AND ?) AS bits
  FROM (
    SELECT user_id, ts, {p.bucket} AS b FROM (
      SELECT user_id, ts, {p.local.sql} AS loc FROM ({straddling})))
  GROUP BY user_id
), history AS (
  SELECT user_key,
    nullif(list_bit_or(list_transform(list_filter(days, lambda d: d >= ? AND d < ?),
      lambda d: {mask_of.format("d")})), 0) AS bits,
    CASE WHEN first_day < ? OR first_day >= ? THEN -1 ELSE {bit_of.format("first_day")} END AS f
  FROM {user_history.PER_USER}
), users AS (
  SELECT bits, coalesce(hf, {p.bucket} - ?) AS f FROM (
    SELECT CASE WHEN h.bits IS NULL AND b.bits IS NULL THEN NULL
      ELSE coalesce(h.bits, 0::UBIGINT) | coalesce(b.bits, 0::UBIGINT) END AS bits,
      h.f AS hf, {p.first_local.sql} AS loc
    FROM history h LEFT JOIN boundary b USING (user_key))
{_statuses(p)}"""
    params: list[Any] = [p.lo - 1, n - 1, p.lo - 1, p.hi, *p.local.params]
    for midnight in midnights:
        params += [p.project_id, midnight, midnight + timedelta(days=1)]
    params += [days.first, after, masks, days.first]
    params += [days.first, after, days.bits, days.first, *[p.project_id] * 3]
    params += [p.lo - 1, *p.first_local.params, n - 1, n]
    return sql, params


def _history_stands_in(store: Store, project_id: str, day: datetime) -> bool:
    """Whether the per-user history can stand in for the project's events before the midnight
    ``day``: the store keeps it, the project has no identity links (the history holds raw ids'
    keys), and the user days count exactly the events before ``day``."""
    if not store.has_user_history:
        return False
    if events_source(store, project_id) != fragments(store)["events_unstitched"]:
        return False
    return rollups_agree(store, project_id, EARLIEST, day)


def _seen_before(store: Store, project_id: str, day: datetime) -> Expr | None:
    """The keys of the users with events before the midnight ``day``, from the per-user
    history (:data:`avila.storage.user_history.SEEN_BEFORE`), when it can stand in for the
    events (:func:`_history_stands_in`)."""
    if not _history_stands_in(store, project_id, day):
        return None
    return Expr(user_history.SEEN_BEFORE, (project_id, day.date()) * 3)


def _zoned_history(store: Store, project_id: str, q: LifecycleQuery, scan_hi: datetime) -> bool:
    """Whether the per-user history can answer ``q`` away from UTC (:func:`_zoned_history_sql`):
    a question about any event without filters, where the history stands in for the events of
    every day up to the scan's end."""
    if q.event or q.filters:
        return False
    days = covering_days(EARLIEST, scan_hi)
    return days is not None and _history_stands_in(store, project_id, days[1])


def period_span(period: str, start_lo: int, end_hi: int, path: str = "end_time") -> tuple[int, int]:
    """``(lo, hi)`` bucket indexes, checking there are at most :data:`MAX_PERIODS`."""
    if end_hi - start_lo + 1 > MAX_PERIODS:
        raise invalid(
            "too_many_periods",
            path,
            f"the range covers {end_hi - start_lo + 1} {period}s; at most {MAX_PERIODS}",
        )
    return start_lo, end_hi


def lifecycle(
    store: Store,
    project_id: str,
    query: LifecycleQuery | Mapping[str, Any],
    *,
    raw: bool = False,
) -> dict[str, Any]:
    """``{"period", "timezone", "dormant_sign": -1, "periods": [{"period_start", "new",
    "returning", "resurrecting", "dormant", "active"}]}`` (see the module docstring).
    Without an ``event`` or filters, in UTC, the daily rollups' user days stand in for the
    events (:data:`avila.analytics.rollup_reads.USER_DAYS`; the same answer, checked first),
    and without identity links the per-user history's rows (:func:`_history_sql`; away from
    UTC by week or month, with the events of the days that straddle periods:
    :func:`_zoned_history_sql`); ``raw`` reads the events in any case."""
    q = parse_explained(LifecycleQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    lo, hi = period_span(
        q.period,
        bucket_of(start, tz, q.period),
        bucket_of(end - timedelta(microseconds=1), tz, q.period),
    )
    days = PERIOD_DAYS[q.period]
    # Whole periods lo-1 .. hi lie inside this scan window; buckets pick them exactly.
    scan_lo = shifted(start, -timedelta(days=2 * days + 2))
    scan_hi = shifted(end, timedelta(days=days + 2))
    cond = condition_expr(store, q.event, "event") if q.event else Expr("TRUE")
    where = where_clause(store, project_id, scan_lo, scan_hi, q.filters)
    local = local_us_expr(store, "ts", tz, scan_lo, scan_hi)
    first_local = local_us_expr(store, "first_ts", tz, scan_lo, scan_hi)
    bucket = bucket_expr(store, "loc", q.period)
    # The scan's partial edge days lie outside periods lo-1 .. hi (its margins are longer than
    # two periods), so whole days of activity give the same bits; first-seen times are read
    # over all history before scan_hi, and only compared inside the window.
    user_days = None
    if not (raw or q.event or q.filters):
        user_days = user_days_answer(store, project_id, tz, scan_lo, scan_hi, read_from=EARLIEST)
    source = user_days or events_source(store, project_id)
    parts = _Parts(
        source=source,
        frag=fragments(store),
        active=Expr(f"({where.sql} AND {cond.sql})", (*where.params, *cond.params)),
        local=local,
        first_local=first_local,
        bucket=bucket,
        period=q.period,
        project_id=project_id,
        scan_lo=scan_lo,
        scan_hi=scan_hi,
        lo=lo,
        hi=hi,
    )
    build = _bitset_sql if hi - lo + 2 <= BITSET_MAX_PERIODS else _activity_sql
    ends = bucket_dates(q.period, lo - 1, hi + 1)  # None at the ends of the calendar
    if build is _bitset_sql and user_days == USER_DAYS and store.has_user_history and ends:
        build = partial(_history_sql, first=ends[0], after=ends[1])
    elif build is _bitset_sql and user_days is None and not raw:
        # Worth it when most days lie in one local period (weeks, months; not days).
        zoned = _zoned_days(parts, tz)
        if (
            zoned is not None
            and len(zoned.straddling) * 3 <= len(zoned.bits)
            and _zoned_history(store, project_id, q, scan_hi)
        ):
            events = events_source(store, project_id)
            build = partial(_zoned_history_sql, days=zoned, events=events)
    if build is _bitset_sql and user_days is None and not raw:
        scan_from = datetime.combine(scan_lo.date(), datetime.min.time())
        seen = _seen_before(store, project_id, scan_from)
        if seen is not None:
            parts = replace(parts, seen_before=seen, scan_from=scan_from)
    sql, params = build(parts)
    counts: dict[int, dict[str, int]] = {b: dict.fromkeys(STATUSES, 0) for b in range(lo, hi + 1)}
    # the bit sets number periods from lo - 1
    offset = 0 if build is _activity_sql else lo - 1
    for b, status, n in store.query(sql, params):
        counts[int(b) + offset][status] = int(n)
    periods = []
    for b in range(lo, hi + 1):
        c = counts[b]
        active = c["new"] + c["returning"] + c["resurrecting"]
        periods.append(
            {
                "period_start": bucket_label(b, q.period),
                "new": c["new"],
                "returning": c["returning"],
                "resurrecting": c["resurrecting"],
                "dormant": -c["dormant"],
                "active": active,
            }
        )
    return {"period": q.period, "timezone": q.timezone, "dormant_sign": -1, "periods": periods}
