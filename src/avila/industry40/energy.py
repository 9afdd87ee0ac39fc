"""Energy consumption over meter readings: kWh per device and day, peak demand, idle energy,
specific energy, CO₂ and a next-day forecast.

Definitions (ISO 50001 energy performance indicators; ``shared/REFERENCES.md``):

* **Energy from power readings** (kW): each reading holds until the next one (sample-and-
  hold), so an interval [tᵢ, tᵢ₊₁) contributes kWᵢ × hours; an interval longer than
  ``max_gap_s`` is a data gap and contributes nothing (reported as ``gap_hours``).
* **Energy from a cumulative meter** (kWh): consumption is the difference of consecutive
  readings; a decreasing reading is a meter reset and counts from 0 (the new reading).
* Energy is then a piecewise-linear cumulative curve E(t); the kWh of a calendar day (in
  ``tz``) is E(next midnight) − E(midnight), so intervals crossing midnight are split in
  proportion to time.
* **Peak demand** = the highest mean kW over any 15-minute window (sliding, not clock-aligned):
  max over s of (E(s + 15 min) − E(s)) / 0.25 h. E is linear between readings, so the maximum
  is at a window starting or ending at a reading; those candidates are evaluated exactly.
  ``None`` when the data span less than one window.
* **Idle energy** = energy of intervals whose starting reading says the machine was not
  producing (``producing: false``), or — without that flag — whose power is below
  ``idle_below_kw``.
* **Specific energy consumption** = kWh / good unit. **CO₂** (kg) = kWh × factor (kg/kWh).
* **Next-day forecast**: the mean of the same weekday over the last four weeks when at least
  7 days of history exist (seasonal naive, averaged); otherwise the mean of the available
  days. Partially covered days count as they are, so send whole days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from avila.errors import ValidationFailed
from avila.schemas.industry40 import EnergyReading, convert

__all__ = [
    "cumulative_energy",
    "daily_kwh",
    "energy_consumption",
    "forecast_next_day",
    "peak_demand",
]

DEMAND_WINDOW_S = 900.0


def _fail(code: str, path: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=[{"path": path, "message": message}])


def cumulative_energy(
    t_s: np.ndarray,
    *,
    power_kw: np.ndarray | None = None,
    meter_kwh: np.ndarray | None = None,
    idle: np.ndarray | None = None,
    max_gap_s: float = 900.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cumulative kWh at each reading time (starting at 0), and the same counting only idle
    intervals (``idle[i]`` says interval [tᵢ, tᵢ₊₁) was idle), plus the gap hours.

    ``t_s`` are epoch seconds, strictly increasing. Give ``power_kw`` or ``meter_kwh``."""
    dt = np.diff(t_s)
    if meter_kwh is not None:
        delta = np.diff(meter_kwh)
        delta = np.where(delta < 0, meter_kwh[1:], delta)  # reset: counts from 0
        gaps = 0.0
    else:
        assert power_kw is not None
        ok = dt <= max_gap_s
        delta = np.where(ok, power_kw[:-1] * dt / 3600.0, 0.0)
        gaps = float(dt[~ok].sum() / 3600.0)
    e = np.concatenate([[0.0], np.cumsum(delta)])
    idle_delta = np.where(idle[:-1], delta, 0.0) if idle is not None else np.zeros_like(delta)
    return e, np.concatenate([[0.0], np.cumsum(idle_delta)]), gaps


def _midnights(t0: float, t1: float, tz: ZoneInfo) -> tuple[list[date], np.ndarray]:
    first = datetime.fromtimestamp(t0, tz).date()
    last = datetime.fromtimestamp(t1, tz).date()
    days = [first + timedelta(days=k) for k in range((last - first).days + 1)]
    bounds = [datetime.combine(d, time(), tzinfo=tz).timestamp() for d in days]
    bounds.append(datetime.combine(last + timedelta(days=1), time(), tzinfo=tz).timestamp())
    return days, np.asarray(bounds)


def daily_kwh(t_s: np.ndarray, e_cum: np.ndarray, tz: str = "UTC") -> dict[date, float]:
    """kWh per local calendar day from a cumulative-energy curve (linear between readings)."""
    days, bounds = _midnights(float(t_s[0]), float(t_s[-1]), ZoneInfo(tz))
    per_day = np.diff(np.interp(bounds, t_s, e_cum))
    return {d: float(v) for d, v in zip(days, per_day, strict=True)}


def peak_demand(
    t_s: np.ndarray, e_cum: np.ndarray, window_s: float = DEMAND_WINDOW_S
) -> tuple[float, float] | tuple[None, None]:
    """(highest mean kW over any window of ``window_s`` seconds, window start in epoch s)."""
    if t_s[-1] - t_s[0] < window_s:
        return None, None
    cand = np.concatenate([t_s, t_s - window_s])
    cand = cand[(cand >= t_s[0]) & (cand <= t_s[-1] - window_s)]
    mean_kw = (np.interp(cand + window_s, t_s, e_cum) - np.interp(cand, t_s, e_cum)) / (
        window_s / 3600.0
    )
    k = int(np.argmax(mean_kw))
    return float(mean_kw[k]), float(cand[k])


def forecast_next_day(daily: Mapping[date, float]) -> tuple[float | None, str]:
    """(kWh forecast for the day after the last one, method name); see the module doc."""
    if not daily:
        return None, "none"
    last = max(daily)
    target = last + timedelta(days=1)
    if len(daily) >= 7:
        same = [daily[d] for w in range(1, 5) if (d := target - timedelta(weeks=w)) in daily]
        if same:
            return float(np.mean(same)), "same_weekday_mean_4w"
    return float(np.mean(list(daily.values()))), "mean_of_available_days"


def _device_arrays(
    device: str, rows: list[EnergyReading], idle_below_kw: float | None
) -> tuple[np.ndarray, dict[str, Any]]:
    rows = sorted(rows, key=lambda r: r.timestamp)
    t = np.asarray([r.timestamp.timestamp() for r in rows])
    if len(t) < 2:
        raise _fail(
            "energy_too_few_readings", "$.readings", f"device {device!r} needs >= 2 readings"
        )
    if np.any(np.diff(t) <= 0):
        raise _fail(
            "energy_duplicate_timestamp",
            "$.readings",
            f"device {device!r} has two readings with the same timestamp",
        )
    kwargs: dict[str, Any] = {}
    if all(r.energy_kwh is not None for r in rows):
        kwargs["meter_kwh"] = np.asarray([r.energy_kwh for r in rows])
    elif all(r.power_kw is not None for r in rows):
        kwargs["power_kw"] = np.asarray([r.power_kw for r in rows])
    else:
        raise _fail(
            "energy_missing_measurement",
            "$.readings",
            f"device {device!r}: every reading needs power_kw, or every reading energy_kwh",
        )
    if all(r.producing is not None for r in rows):
        kwargs["idle"] = np.asarray([not r.producing for r in rows])
    elif idle_below_kw is not None and "power_kw" in kwargs:
        kwargs["idle"] = kwargs["power_kw"] < idle_below_kw
    return t, kwargs


def energy_consumption(
    readings: Iterable[EnergyReading | Mapping[str, Any]],
    *,
    good_units: Mapping[str, int] | None = None,
    co2_kg_per_kwh: float | None = None,
    tz: str = "UTC",
    max_gap_s: float = 900.0,
    idle_below_kw: float | None = None,
) -> dict[str, Any]:
    """Energy report over readings of one or more devices.

    Returns ``{"devices": [{"device_id", "kwh", "days": [{"date": "YYYY-MM-DD", "kwh",
    "idle_kwh"?}], "peak_demand_kw", "peak_demand_start" (RFC 3339 UTC), "idle_kwh"?,
    "gap_hours", "good_units"?, "specific_energy_kwh_per_unit"?, "co2_kg"?,
    "forecast_next_day_kwh", "forecast_method"}, ...], "total_kwh", "co2_kg"?, "tz"}``.
    ``idle_*`` appear when idleness is known, ``co2_kg`` with a factor,
    ``specific_energy_kwh_per_unit`` when good units are given (``None`` for 0 units).
    """
    try:
        zone = ZoneInfo(tz)
    except (KeyError, ValueError, OSError) as exc:  # OSError: a tz database directory
        raise _fail("energy_unknown_timezone", "$.tz", f"unknown time zone {tz!r}") from exc
    if co2_kg_per_kwh is not None and co2_kg_per_kwh < 0:
        raise _fail("energy_negative_co2_factor", "$.co2_kg_per_kwh", "factor must be >= 0")
    by_device: dict[str, list[EnergyReading]] = {}
    for r in readings:
        reading = convert(EnergyReading, r)
        by_device.setdefault(reading.device_id, []).append(reading)
    devices = []
    for device in sorted(by_device):
        t, kwargs = _device_arrays(device, by_device[device], idle_below_kw)
        e, e_idle, gaps = cumulative_energy(t, max_gap_s=max_gap_s, **kwargs)
        daily = daily_kwh(t, e, zone.key)
        idle_daily = daily_kwh(t, e_idle, zone.key) if "idle" in kwargs else None
        peak, peak_at = peak_demand(t, e)
        forecast, method = forecast_next_day(daily)
        total = float(e[-1])
        row: dict[str, Any] = {
            "device_id": device,
            "kwh": total,
            "days": [
                {"date": d.isoformat(), "kwh": v}
                | ({"idle_kwh": idle_daily[d]} if idle_daily is not None else {})
                for d, v in daily.items()
            ],
            "peak_demand_kw": peak,
            "peak_demand_start": None
            if peak_at is None
            else datetime.fromtimestamp(peak_at, ZoneInfo("UTC"))
            .isoformat()
            .replace("+00:00", "Z"),
            "gap_hours": gaps,
            "forecast_next_day_kwh": forecast,
            "forecast_method": method,
        }
        if idle_daily is not None:
            row["idle_kwh"] = float(e_idle[-1])
        if good_units is not None and device in good_units:
            units = good_units[device]
            row["good_units"] = units
            row["specific_energy_kwh_per_unit"] = total / units if units > 0 else None
        if co2_kg_per_kwh is not None:
            row["co2_kg"] = total * co2_kg_per_kwh
        devices.append(row)
    out: dict[str, Any] = {
        "devices": devices,
        "total_kwh": float(sum(d["kwh"] for d in devices)),
        "tz": zone.key,
    }
    if co2_kg_per_kwh is not None:
        out["co2_kg"] = out["total_kwh"] * co2_kg_per_kwh
    return out
