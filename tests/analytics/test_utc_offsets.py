"""Time-zone pieces behind every local-time bucket, against pandas' own conversion."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from avila.analytics.calendar import (
    local_us_array,
    utc_offsets,
)

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # 30-minute DST
    "Asia/Kathmandu",  # +05:45, no DST
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "Africa/Monrovia",  # -00:44:30 until 1972-01-07 00:44:30 UTC
    "America/Sao_Paulo",  # dropped DST in 2019
    "Africa/Casablanca",  # DST suspended for Ramadan: four changes a year
    "America/St_Johns",  # -03:30; changed at 00:01 local until 2011: not on a UTC hour
]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("years", [(1970, 1976), (2009, 2026)])
def test_local_time_of_every_sample_matches_pandas(zone: str, years: tuple[int, int]) -> None:
    tz = ZoneInfo(zone)
    lo, hi = datetime(years[0], 1, 1), datetime(years[1], 3, 1)
    rng = np.random.default_rng(11)
    lo_us = int(pd.Timestamp(lo).value // 1000)
    hi_us = int(pd.Timestamp(hi).value // 1000)
    samples = rng.integers(lo_us, hi_us, 200_000)
    # Every change itself, one microsecond before it and at it, also comes under test.
    edges = np.array([b for b, _ in utc_offsets(tz, lo, hi)[1:]], dtype=np.int64)
    t_us = np.sort(np.concatenate([samples, edges, edges - 1]))
    expected = (
        pd.DatetimeIndex(t_us * 1000, tz="UTC").tz_convert(zone).tz_localize(None).asi8 // 1000
    )
    np.testing.assert_array_equal(local_us_array(t_us, tz, lo, hi), expected)


def test_pieces_start_at_the_exact_second_of_each_change() -> None:
    pieces = utc_offsets(ZoneInfo("Europe/Berlin"), datetime(2024, 1, 1), datetime(2024, 12, 31))
    # 2024-03-31 01:00 UTC to +02:00, 2024-10-27 01:00 UTC back to +01:00.
    hour = 3_600_000_000
    assert [(datetime.utcfromtimestamp(b / 1e6), o // hour) for b, o in pieces[1:]] == [
        (datetime(2024, 3, 31, 1), 2),
        (datetime(2024, 10, 27, 1), 1),
    ]
    assert pieces[0][1] == hour


def test_a_range_without_changes_is_one_piece_and_a_repeat_is_the_same_answer() -> None:
    tz = ZoneInfo("Asia/Kathmandu")
    first = utc_offsets(tz, datetime(2020, 1, 1), datetime(2026, 1, 1))
    assert len(first) == 1 and first[0][1] == (5 * 60 + 45) * 60_000_000
    assert utc_offsets(tz, datetime(2020, 1, 1), datetime(2026, 1, 1)) == first
