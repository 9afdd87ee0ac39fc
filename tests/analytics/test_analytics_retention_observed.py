"""``periods_observed`` of cohort retention against a plain-Python/pandas oracle.

Per cohort, ``periods_observed`` counts the periods k (0 .. periods-1) that began before
``end_time``: some instant before ``end_time`` has a wall time (in ``timezone``) at or after the
local start of period P0 + k. The oracle finds the latest wall time reached before ``end_time``
with pandas (every whole minute of the two days before it, and the microsecond before it) and
the periods' local starts by calendar arithmetic on ``cohort_start``; it shares no code with
the server's buckets. Runs on every backend of the ``store`` fixtures (DuckDB and chdb).
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from analytics_data import PROJECT, event, random_events, to_table
from analytics_oracles import retention_oracle

from avila.analytics import retention

BASE = datetime(2018, 10, 20)
# Four months of users (a 2-day random pattern stretched 60x; ties on a 7-minute grid), across
# Sao Paulo's DST start at midnight (2018-11-04) and the northern DST ends (2018-10-28/11-04).
ROWS = [
    {**r, "ts": BASE + (r["ts"] - datetime(2024, 3, 1)) * 60}
    for r in random_events(seed=23, n_users=90, span=timedelta(days=2), grid=timedelta(minutes=7))
]
START = datetime(2018, 10, 25)
PERIODS = {"day": 10, "week": 6, "month": 3}
ZONES = ["UTC", "America/Sao_Paulo", "Asia/Kolkata", "America/St_Johns"]


def local_start(cohort_start: str, period: str, k: int) -> datetime:
    """Wall-clock start of period k of the cohort that began on ``cohort_start``."""
    first = date.fromisoformat(cohort_start)
    if period == "month":
        months = first.year * 12 + first.month - 1 + k
        return datetime(months // 12, months % 12 + 1, 1)
    return datetime.combine(
        first + timedelta(days=k * (7 if period == "week" else 1)), datetime.min.time()
    )


@functools.lru_cache(maxsize=256)
def latest_wall_time(end: datetime, tz: str) -> datetime:
    """The latest wall time in ``tz`` of any instant before ``end`` (naive UTC): clocks that
    went back shortly before ``end`` may have shown a later time than the one before ``end``."""
    top = pd.Timestamp(end).floor("min")
    grid = pd.date_range(end=top, periods=2 * 1440 + 1, freq="min") - pd.Timedelta(microseconds=1)
    grid = grid.append(pd.DatetimeIndex([pd.Timestamp(end) - pd.Timedelta(microseconds=1)]))
    walls = grid.tz_localize("UTC").tz_convert(tz).tz_localize(None)
    return walls.max().to_pydatetime()


def observed_oracle(cohort_start: str, period: str, periods: int, end: datetime, tz: str) -> int:
    wall = latest_wall_time(end, tz)
    return sum(1 for k in range(periods) if local_start(cohort_start, period, k) <= wall)


def local_midnight(day: date, tz: str) -> datetime:
    """Naive UTC instant of 00:00 of ``day`` in ``tz`` (a day with a midnight)."""
    return (
        datetime.combine(day, datetime.min.time(), ZoneInfo(tz))
        .astimezone(UTC)
        .replace(tzinfo=None)
    )


def body(period: str, end: datetime, tz: str, mode: str = "exact", **extra: object) -> dict:
    return {
        "period": period,
        "periods": PERIODS[period],
        "start_time": START.isoformat() + "Z",
        "end_time": end.isoformat() + "Z",
        "timezone": tz,
        "mode": mode,
        **extra,
    }


@pytest.fixture(scope="module")
def data_store(module_store):
    module_store.append_events(to_table(ROWS))
    return module_store


def ends(period: str, tz: str) -> dict[str, datetime]:
    """A range end in mid-period, exactly on a period's local start, and 1 µs either side."""
    boundary = local_midnight(
        {"day": date(2018, 12, 19), "week": date(2018, 12, 17), "month": date(2018, 12, 1)}[period],
        tz,
    )
    return {
        "mid-period": datetime(2018, 12, 19, 15, 17, 31, 250),
        "boundary": boundary,
        "boundary-1us": boundary - timedelta(microseconds=1),
        "boundary+1us": boundary + timedelta(microseconds=1),
        "short-range": datetime(2018, 11, 4, 2, 30),  # Sao Paulo: 23:30 the day before DST
    }


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize("period", ["day", "week", "month"])
@pytest.mark.parametrize("mode", ["exact", "on_or_after"])
def test_periods_observed_matches_the_oracle(data_store, tz, period, mode):
    seen_partial = False
    for name, end in ends(period, tz).items():
        got = retention(data_store, PROJECT, body(period, end, tz, mode))
        # The existing fields keep their numbers (test_analytics_retention covers the other
        # zones; the pandas oracle is slow).
        if name == "mid-period" and mode == "exact" and tz == "America/St_Johns":
            want = retention_oracle(
                ROWS, PROJECT, START, end, period, PERIODS[period], tz, mode, None, None
            )
            assert {c["cohort_start"]: c["retained"] for c in got["cohorts"]} == want, name
        assert got["cohorts"], name
        for c in got["cohorts"]:
            assert set(c) == {"cohort_start", "size", "retained", "rates", "periods_observed"}
            assert len(c["rates"]) == len(c["retained"]) == PERIODS[period]
            expected = observed_oracle(c["cohort_start"], period, PERIODS[period], end, tz)
            assert c["periods_observed"] == expected, (name, c["cohort_start"])
            assert 1 <= c["periods_observed"] <= PERIODS[period]
            seen_partial |= c["periods_observed"] < PERIODS[period]
    assert seen_partial  # the latest cohorts have not lived all their periods


def test_a_period_beginning_exactly_at_the_end_is_not_observed(load):
    # Berlin (UTC+1 in winter): Monday 2024-01-15 00:00 local is 2024-01-14 23:00 UTC.
    store = load(
        [
            event("a", datetime(2024, 1, 1, 9)),  # week of 2024-01-01
            event("b", datetime(2024, 1, 14, 22, 59)),  # Sunday 23:59 local: week of 01-08
            event("a", datetime(2024, 1, 9)),
        ]
    )
    q = {
        "period": "week",
        "periods": 4,
        "timezone": "Europe/Berlin",
        "start_time": "2024-01-01T00:00:00Z",
    }
    at = retention(store, PROJECT, {**q, "end_time": "2024-01-14T23:00:00Z"})
    assert [(c["cohort_start"], c["periods_observed"]) for c in at["cohorts"]] == [
        ("2024-01-01", 2),
        ("2024-01-08", 1),
    ]
    assert [c["retained"] for c in at["cohorts"]] == [[1, 1, 0, 0], [1, 0, 0, 0]]
    after = retention(store, PROJECT, {**q, "end_time": "2024-01-14T23:00:00.000001Z"})
    assert [c["periods_observed"] for c in after["cohorts"]] == [3, 2]
    # In UTC the same end is mid-Sunday: the weeks of 01-15 have not begun.
    utc = retention(store, PROJECT, {**q, "timezone": "UTC", "end_time": "2024-01-14T23:00:00Z"})
    assert [(c["cohort_start"], c["periods_observed"]) for c in utc["cohorts"]] == [
        ("2024-01-01", 2),
        ("2024-01-08", 1),
    ]
    monthly = retention(
        store,
        PROJECT,
        {**q, "period": "month", "periods": 3, "end_time": "2024-01-31T23:00:00Z"},
    )  # 2024-02-01 00:00 Berlin: February has not begun
    assert [c["periods_observed"] for c in monthly["cohorts"]] == [1]
    daily = retention(
        store,
        PROJECT,
        {**q, "period": "day", "periods": 20, "end_time": "2024-01-14T23:00:00Z"},
    )
    # Days 01-01 .. 01-14 (local) have begun: 14 for a's cohort, 1 for b's (01-14 local).
    assert [(c["cohort_start"], c["periods_observed"]) for c in daily["cohorts"]] == [
        ("2024-01-01", 14),
        ("2024-01-14", 1),
    ]


def test_cap_at_periods_and_daily_plan_beyond_the_mask(load):
    # 80 days of daily periods in exact mode take the join plan (more than 63 periods).
    store = load([event("a", datetime(2024, 1, 1, 12)), event("b", datetime(2024, 3, 20, 12))])
    got = retention(
        store,
        PROJECT,
        {
            "period": "day",
            "periods": 10,
            "timezone": "Asia/Kolkata",
            "start_time": "2024-01-01T00:00:00Z",
            "end_time": "2024-03-21T00:00:00Z",  # 05:30 on 03-21 in Kolkata
        },
    )
    assert [(c["cohort_start"], c["periods_observed"]) for c in got["cohorts"]] == [
        ("2024-01-01", 10),
        ("2024-03-20", 2),
    ]


def test_empty_range_has_no_cohorts(load):
    store = load([event("a", datetime(2024, 1, 1, 12)), event("a", datetime(2024, 3, 1))])
    for period in ("day", "week", "month"):
        got = retention(
            store,
            PROJECT,
            {
                "period": period,
                "timezone": "America/Sao_Paulo",
                "start_time": "2024-02-01T00:00:00Z",
                "end_time": "2024-02-10T00:00:00Z",
            },
        )
        assert got["cohorts"] == []
    # The shortest range (1 µs) holding one first event: period 0 only.
    one = retention(
        store,
        PROJECT,
        {
            "period": "day",
            "start_time": "2024-01-01T12:00:00Z",
            "end_time": "2024-01-01T12:00:00.000001Z",
        },
    )
    assert [(c["cohort_start"], c["size"], c["periods_observed"]) for c in one["cohorts"]] == [
        ("2024-01-01", 1, 1)
    ]


def test_clocks_going_back_across_midnight(load):
    # St. John's fell back from 00:01 NDT (-2:30) to 23:01 NST (-3:30) on 2005-10-30, at
    # 02:31 UTC. A user seen at 02:30:30 UTC (00:00:30 on 10-30) is in the 10-30 cohort; at an
    # end of 02:45 UTC the clocks read 23:15 on 10-29, yet 10-30 has begun (it holds a cohort).
    store = load(
        [event("a", datetime(2005, 10, 30, 2, 30, 30)), event("b", datetime(2005, 10, 29, 12))]
    )
    q = {
        "period": "day",
        "periods": 3,
        "timezone": "America/St_Johns",
        "start_time": "2005-10-29T00:00:00Z",
    }
    for end in ("2005-10-30T02:45:00Z", "2005-10-30T03:31:00Z"):
        got = retention(store, PROJECT, {**q, "end_time": end})
        assert [(c["cohort_start"], c["periods_observed"]) for c in got["cohorts"]] == [
            ("2005-10-29", 2),
            ("2005-10-30", 1),
        ], end
    # 10-31 00:00 NST is 03:30 UTC: begun 1 µs later, not at it.
    at = retention(store, PROJECT, {**q, "end_time": "2005-10-31T03:30:00Z"})
    assert [c["periods_observed"] for c in at["cohorts"]] == [2, 1]
    later = retention(store, PROJECT, {**q, "end_time": "2005-10-31T03:30:00.000001Z"})
    assert [c["periods_observed"] for c in later["cohorts"]] == [3, 2]
    for end in (datetime(2005, 10, 30, 2, 45), datetime(2005, 10, 30, 3, 31)):
        assert observed_oracle("2005-10-30", "day", 3, end, "America/St_Johns") == 1


def test_midnight_that_does_not_exist(load):
    # Sao Paulo, 2018-11-04: 00:00 -03 became 01:00 -02 at 03:00 UTC. The day began at 03:00 UTC
    # (01:00 local), not at 02:00 UTC (a local 00:00 -02 that never was).
    store = load([event("a", datetime(2018, 11, 3, 12))])
    q = {
        "period": "day",
        "periods": 3,
        "timezone": "America/Sao_Paulo",
        "start_time": "2018-11-03T00:00:00Z",
    }
    got = {
        end: retention(store, PROJECT, {**q, "end_time": end})["cohorts"][0]["periods_observed"]
        for end in ("2018-11-04T02:30:00Z", "2018-11-04T03:00:00Z", "2018-11-04T03:00:00.000001Z")
    }
    assert got == {
        "2018-11-04T02:30:00Z": 1,
        "2018-11-04T03:00:00Z": 1,
        "2018-11-04T03:00:00.000001Z": 2,
    }
