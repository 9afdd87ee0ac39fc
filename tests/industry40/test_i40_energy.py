"""Energy computations against pandas / numpy oracles."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from avila.errors import ValidationFailed
from avila.industry40.energy import (
    cumulative_energy,
    energy_consumption,
    forecast_next_day,
    peak_demand,
)

T0 = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday


def minute_power(days: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * 24 * 60 + 1
    ts = pd.date_range(T0, periods=n, freq="1min")
    kw = rng.gamma(4.0, 5.0, n)
    producing = rng.random(n) < 0.7
    kw[~producing] = rng.uniform(0.5, 2.0, (~producing).sum())
    return pd.DataFrame({"timestamp": ts, "kw": kw, "producing": producing})


def readings(df: pd.DataFrame, device: str = "press", **extra) -> list[dict]:
    return [
        {"device_id": device, "timestamp": t.to_pydatetime(), "power_kw": float(k), **extra}
        | ({"producing": bool(p)} if "producing" in df else {})
        for t, k, p in zip(df["timestamp"], df["kw"], df.get("producing", df["kw"]), strict=True)
    ]


def test_daily_kwh_peak_idle_against_pandas():
    df = minute_power()
    r = energy_consumption(readings(df), good_units={"press": 1200}, co2_kg_per_kwh=0.233)
    (dev,) = r["devices"]
    # oracle: each minute's reading holds for one minute, attributed to the reading's date
    held = df.iloc[:-1]
    daily = (held["kw"] / 60).groupby(held["timestamp"].dt.date).sum()
    got = {d["date"]: d["kwh"] for d in dev["days"]}
    assert list(got) == [d.isoformat() for d in daily.index] + ["2025-03-06"]
    for d, v in daily.items():
        assert got[d.isoformat()] == pytest.approx(v, rel=1e-12)
    assert got["2025-03-06"] == 0.0
    assert dev["kwh"] == pytest.approx(daily.sum())
    assert r["total_kwh"] == pytest.approx(daily.sum())
    # peak demand: highest mean over 15 consecutive one-minute readings
    assert dev["peak_demand_kw"] == pytest.approx(held["kw"].rolling(15).mean().max(), rel=1e-12)
    start = held["timestamp"].iloc[int(held["kw"].rolling(15).mean().idxmax()) - 14]
    assert dev["peak_demand_start"] == start.isoformat().replace("+00:00", "Z")
    idle = (held["kw"] / 60)[~held["producing"]].sum()
    assert dev["idle_kwh"] == pytest.approx(idle)
    assert dev["specific_energy_kwh_per_unit"] == pytest.approx(daily.sum() / 1200)
    assert dev["co2_kg"] == pytest.approx(daily.sum() * 0.233)
    assert r["co2_kg"] == pytest.approx(daily.sum() * 0.233)


def test_peak_demand_irregular_readings_against_brute_force():
    rng = np.random.default_rng(9)
    t = np.cumsum(rng.uniform(5, 120, 400))
    kw = rng.gamma(3.0, 4.0, t.size)
    e, _, _ = cumulative_energy(t, power_kw=kw, max_gap_s=1e9)
    peak, at = peak_demand(t, e)
    # brute force: every whole-second window start, step-held power integrated exactly
    starts = np.arange(t[0], t[-1] - 900 + 1e-9, 1.0)
    brute = (np.interp(starts + 900, t, e) - np.interp(starts, t, e)) / 0.25
    assert peak >= brute.max() - 1e-9
    assert peak == pytest.approx(brute.max(), rel=1e-3)
    assert t[0] <= at <= t[-1] - 900
    assert peak_demand(t[:2], e[:2]) == (None, None)  # spans less than 15 min


def test_midnight_split_and_gaps():
    rows = [
        {"device_id": "d", "timestamp": T0 - timedelta(hours=1), "power_kw": 2.0},
        {"device_id": "d", "timestamp": T0 + timedelta(hours=1), "power_kw": 5.0},
        {"device_id": "d", "timestamp": T0 + timedelta(hours=5), "power_kw": 1.0},
    ]
    (dev,) = energy_consumption(rows, max_gap_s=3 * 3600)["devices"]
    assert [(d["date"], d["kwh"]) for d in dev["days"]] == [
        ("2025-03-02", 2.0),
        ("2025-03-03", 2.0),
    ]
    assert dev["gap_hours"] == 4.0  # the 4-hour interval exceeds max_gap_s
    assert "idle_kwh" not in dev


def test_meter_readings_with_reset():
    meter = [100.0, 110.0, 125.0, 5.0, 20.0]  # reset before the 4th reading
    rows = [
        {"device_id": "m", "timestamp": T0 + timedelta(hours=12 * i), "energy_kwh": v}
        for i, v in enumerate(meter)
    ]
    (dev,) = energy_consumption(rows)["devices"]
    assert dev["kwh"] == 10 + 15 + 5 + 15
    assert [d["kwh"] for d in dev["days"]] == [25.0, 20.0, 0.0]
    assert dev["peak_demand_kw"] == pytest.approx(15 / 12)


def test_idle_from_power_threshold():
    df = minute_power(days=1).drop(columns="producing")
    (dev,) = energy_consumption(readings(df), idle_below_kw=2.5)["devices"]
    held = df.iloc[:-1]
    assert dev["idle_kwh"] == pytest.approx((held["kw"] / 60)[held["kw"] < 2.5].sum())


def test_local_time_zone_days():
    # one reading per hour at 1 kW over two UTC days, counted in New York days (UTC−5 in March
    # before the DST change on 9 March)
    rows = [
        {"device_id": "d", "timestamp": T0 + timedelta(hours=h), "power_kw": 1.0} for h in range(49)
    ]
    days = energy_consumption(rows, tz="America/New_York", max_gap_s=3600)["devices"][0]["days"]
    assert [(d["date"], d["kwh"]) for d in days] == [
        ("2025-03-02", 5.0),
        ("2025-03-03", 24.0),
        ("2025-03-04", 19.0),
    ]


def test_forecast_same_weekday_against_pandas():
    rng = np.random.default_rng(5)
    idx = pd.date_range("2025-01-06", periods=35, freq="D")  # five weeks from a Monday
    kwh = pd.Series(100 + 30 * (idx.day_of_week >= 5) + rng.normal(0, 3, idx.size), index=idx)
    value, method = forecast_next_day({d.date(): v for d, v in kwh.items()})
    target = idx[-1] + pd.Timedelta(days=1)
    oracle = kwh[kwh.index.day_of_week == target.day_of_week].iloc[-4:].mean()
    assert method == "same_weekday_mean_4w" and value == pytest.approx(oracle)
    assert forecast_next_day({date(2025, 1, 1): 4.0, date(2025, 1, 2): 6.0}) == (
        5.0,
        "mean_of_available_days",
    )
    assert forecast_next_day({}) == (None, "none")


@pytest.mark.parametrize(
    ("rows", "kwargs", "code"),
    [
        (
            [{"device_id": "d", "timestamp": T0, "power_kw": 1.0}] * 2,
            {},
            "energy_duplicate_timestamp",
        ),
        ([{"device_id": "d", "timestamp": T0, "power_kw": 1.0}], {}, "energy_too_few_readings"),
        (
            [
                {"device_id": "d", "timestamp": T0, "power_kw": 1.0},
                {"device_id": "d", "timestamp": T0 + timedelta(minutes=1)},
            ],
            {},
            "energy_missing_measurement",
        ),
        ([], {"tz": "Mars/Olympus"}, "energy_unknown_timezone"),
        ([{"device_id": "d", "timestamp": T0, "power_kw": -1.0}], {}, "validation_failed"),
    ],
)
def test_bad_input(rows, kwargs, code):
    with pytest.raises(ValidationFailed) as exc:
        energy_consumption(rows, **kwargs)
    assert exc.value.code == code


def test_zero_good_units_has_no_specific_energy():
    rows = [
        {"device_id": "d", "timestamp": T0 + timedelta(minutes=i), "power_kw": 3.0}
        for i in range(3)
    ]
    (dev,) = energy_consumption(rows, good_units={"d": 0})["devices"]
    assert dev["specific_energy_kwh_per_unit"] is None and dev["peak_demand_kw"] is None
