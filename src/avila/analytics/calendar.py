"""Time zones and calendar buckets: a local time of an event as SQL (per-piece UTC offsets,
found to the second and cached per year) and as numpy, and the integer hour/day/week/month
buckets of local times with their labels. The SQL, numpy and Python forms are twins (the
offsets are checked against pandas in tests/analytics/test_utc_offsets.py; the buckets by every
report's time-zone tests)."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from avila.analytics.common import US_PER_DAY, US_PER_SECOND, Expr, fragments, naive_utc
from avila.storage.base import Store

#: A day inside datetime's ends: any zone's local time of these instants is representable.
_FIRST_SAFE_US = (datetime(1, 1, 2) - datetime(1970, 1, 1)) // timedelta(microseconds=1)
_LAST_SAFE_US = (datetime(9999, 12, 31) - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def _offset_at(tz: ZoneInfo, second: int) -> int:
    """UTC offset of ``tz`` (microseconds) at ``second`` seconds since the epoch. Zones change
    offset on whole seconds, so the second is as good as any microsecond in it."""
    offset = datetime.fromtimestamp(second, tz).utcoffset()
    return int(offset.total_seconds()) * US_PER_SECOND if offset else 0


@functools.lru_cache(maxsize=4096)
def _transitions(tz: ZoneInfo, year: int) -> tuple[tuple[int, int], ...]:
    """``(second, offset_us)`` for each change of ``tz``'s UTC offset in the UTC year ``year``:
    the first second with the new offset, found by hourly sampling and bisection to the second
    (a change reverted within the hour is missed). Cached: a dashboard asks about the same
    years again and again, and this runs in the server process, beside the event loop."""
    start = max(int(datetime(year, 1, 1, tzinfo=UTC).timestamp()), _FIRST_SAFE_US // US_PER_SECOND)
    end = min(int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp()), _LAST_SAFE_US // US_PER_SECOND)
    found: list[tuple[int, int]] = []
    current = _offset_at(tz, start)
    at = start
    while at < end:
        nxt = min(at + 3600, end)
        if _offset_at(tz, nxt) != current:
            a, b = at, nxt  # offset(a) == current, offset(b) differs
            while b - a > 1:
                mid = (a + b) // 2
                if _offset_at(tz, mid) == current:
                    a = mid
                else:
                    b = mid
            current = _offset_at(tz, b)
            found.append((b, current))
        at = nxt
    return tuple(found)


def _utc_year(at_us: int) -> int:
    return (datetime(1970, 1, 1) + timedelta(microseconds=at_us)).year


def utc_throughout(tz: ZoneInfo, start: datetime, end: datetime) -> bool:
    """Whether local time in ``tz`` is UTC over ``[start, end]`` (its days are UTC days)."""
    return all(offset == 0 for _, offset in utc_offsets(tz, start, end))


def utc_offsets(tz: ZoneInfo, lo: datetime, hi: datetime) -> list[tuple[int, int]]:
    """Piecewise-constant UTC offset of ``tz`` over ``[lo, hi]``: ``[(from_us, offset_us)]``.

    The first piece starts at -inf (``from_us`` is ignored); each later one at the exact
    microsecond its offset begins. Offset changes shorter than an hour may be missed.
    """
    lo_us = int((naive_utc(lo) - datetime(1970, 1, 1)) / timedelta(microseconds=1)) - US_PER_DAY
    hi_us = int((naive_utc(hi) - datetime(1970, 1, 1)) / timedelta(microseconds=1)) + US_PER_DAY
    # Within a day of datetime's ends any zone's local time is still representable.
    lo_us, hi_us = max(lo_us, _FIRST_SAFE_US), min(hi_us, _LAST_SAFE_US)
    pieces = [(lo_us, _offset_at(tz, lo_us // US_PER_SECOND))]
    for year in range(max(_utc_year(lo_us), 1), min(_utc_year(hi_us), 9998) + 1):
        for second, offset in _transitions(tz, year):
            at = second * US_PER_SECOND
            if lo_us < at <= hi_us and offset != pieces[-1][1]:
                pieces.append((at, offset))
    return pieces


def local_us_expr(store: Store, ts_sql: str, tz: ZoneInfo, lo: datetime, hi: datetime) -> Expr:
    """Microseconds since the epoch of ``ts_sql`` (naive UTC) as wall time in ``tz``."""
    epoch = fragments(store)["epoch_us"].format(ts_sql)
    pieces = utc_offsets(tz, lo, hi)
    if len(pieces) == 1:
        return Expr(f"({epoch} + ?)", (pieces[0][1],))
    # "WHEN epoch < boundary": the epoch expression is repeated as SQL text, not a value.
    whens = " ".join(f"WHEN {epoch} < ? THEN ?" for _ in pieces[1:])
    params: list[Any] = []
    for (_, offset), (boundary, _) in zip(pieces, pieces[1:], strict=False):
        params.extend([boundary, offset])
    return Expr(f"({epoch} + CASE {whens} ELSE ? END)", (*params, pieces[-1][1]))


def _floor_div(store: Store, sql: str, divisor: int) -> str:
    """``floor(sql / divisor)`` for a positive integer ``divisor``. The backends' ``int_div``
    truncates toward zero (DuckDB ``//``, ClickHouse ``intDiv``), which would put a local time
    before 1970-01-01 (a client clock reset to the epoch, seen west of UTC) in the bucket after
    its own. Shifting by a whole number of divisors past any event time (year 1 is -6.2e16 µs)
    makes the dividend positive, where truncating is flooring: one addition per row instead of
    a second division and a branch (retention over 25 M rows: 7-27 % more CPU that way)."""
    shift = 10**17 // divisor + 1
    quotient = fragments(store)["int_div"].format(f"({sql}) + {shift * divisor}", divisor)
    return f"({quotient} - {shift})"


def bucket_expr(store: Store, local_us_sql: str, interval: str) -> str:
    """Integer calendar bucket of a local-time microsecond value (see :func:`bucket_label`),
    floored like its twins :func:`bucket_of` and :func:`bucket_array`."""
    if interval == "hour":
        return _floor_div(store, local_us_sql, 3600 * US_PER_SECOND)
    day = _floor_div(store, local_us_sql, US_PER_DAY)
    if interval == "day":
        return day
    if interval == "week":  # 1970-01-01 is a Thursday; ISO weeks start on Monday
        return _floor_div(store, f"{day} + 3", 7)
    return fragments(store)["month_index"].format(local_us_sql)


def bucket_of(moment: datetime, tz: ZoneInfo, interval: str) -> int:
    """Python twin of :func:`bucket_expr` for a naive UTC datetime."""
    local = naive_utc(moment).replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)
    if interval == "hour":
        return int((local - datetime(1970, 1, 1)) // timedelta(hours=1))
    days = (local.date() - date(1970, 1, 1)).days
    if interval == "day":
        return days
    if interval == "week":
        return (days + 3) // 7
    return local.year * 12 + local.month - 1


def bucket_label(index: int, interval: str) -> str:
    """Local start of bucket ``index``: ``YYYY-MM-DD`` (hour: ``YYYY-MM-DDTHH:00``)."""
    if interval == "hour":
        return (datetime(1970, 1, 1) + timedelta(hours=index)).strftime("%Y-%m-%dT%H:00")
    if interval == "day":
        return (date(1970, 1, 1) + timedelta(days=index)).isoformat()
    if interval == "week":
        return (date(1970, 1, 1) + timedelta(days=index * 7 - 3)).isoformat()
    return date(index // 12, index % 12 + 1, 1).isoformat()


def bucket_dates(interval: str, *indexes: int) -> list[date] | None:
    """The first local days of buckets ``indexes`` (day, week or month), or None when one of
    them lies outside Python's dates (the period before one in year 1, or after one in 9999)."""
    try:
        return [date.fromisoformat(bucket_label(index, interval)) for index in indexes]
    except (ValueError, OverflowError):
        return None


def local_us_array(t_us: np.ndarray, tz: ZoneInfo, lo: datetime, hi: datetime) -> np.ndarray:
    """numpy twin of :func:`local_us_expr` for an int64 array of epoch microseconds."""
    pieces = utc_offsets(tz, lo, hi)
    bounds = np.array([b for b, _ in pieces[1:]], dtype=np.int64)
    offsets = np.array([o for _, o in pieces], dtype=np.int64)
    return t_us + offsets[np.searchsorted(bounds, t_us, side="right")]


def bucket_array(local_us: np.ndarray, interval: str) -> np.ndarray:
    """numpy twin of :func:`bucket_expr` (``day``/``week``/``hour`` only)."""
    if interval == "hour":
        return local_us // (3600 * US_PER_SECOND)
    days = local_us // US_PER_DAY
    return days if interval == "day" else (days + 3) // 7
