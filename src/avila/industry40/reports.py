"""The KPI functions of :mod:`avila.industry40` fed from recorded telemetry.

* **OEE** over [start, end) from the reserved metrics (see :mod:`avila.industry40.records`):
  all time = end − start; planned production time = all time − planned stops (state 3) − time
  with no state known; run time = PPT − down (0) − setup (4); idle (2) stays in run time, so
  minor stops show as performance loss (oee.com). Counts are the sums of ``units_good`` and
  ``units_rejected``; the ideal cycle time comes from the request or the device attribute
  ``ideal_cycle_time_ms``. TEEP uses all time.
* **Maintenance**: degradation histories since the last repair (within ``lookback_hours``),
  at most 500 points per metric (bucket means); failure thresholds from the device type's
  alarm rules (``max`` → rising to failure, ``min`` → falling; critical rules first), inferred
  otherwise. MTBF / MTTR over the lookback from the ``state`` history.
* **Energy**: ``power_kw`` / ``energy_kwh`` readings, producing = ``state`` 1 at that time;
  ranges over 3 days use 1-minute buckets (mean power, last meter value).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from avila.errors import ValidationFailed
from avila.industry40 import records
from avila.industry40.alarms import AlarmService
from avila.industry40.devices import DeviceRegistry, rfc3339
from avila.industry40.energy import energy_consumption
from avila.industry40.maintenance import predict_maintenance, reliability_metrics
from avila.industry40.oee import calculate_oee
from avila.schemas.industry40 import EnergyReading, MetricHistory
from avila.storage.base import Store

#: The most units an OEE body takes (``ProductionData`` counts).
MAX_RECORDED_UNITS = 1e12


def _fail(code: str, path: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=[{"path": path, "message": message}])


def recorded_production(
    store: Store,
    registry: DeviceRegistry,
    project_id: str,
    device_id: str,
    start: datetime,
    end: datetime,
    ideal_cycle_time_ms: float | None = None,
) -> dict[str, Any]:
    """The seed's ``production_data`` for a device and window, from telemetry."""
    device = registry.require(project_id, device_id)
    ideal = ideal_cycle_time_ms or device.attributes.get("ideal_cycle_time_ms")
    if not isinstance(ideal, int | float) or ideal <= 0:
        raise _fail(
            "oee_missing_ideal_cycle_time",
            "$.ideal_cycle_time_ms",
            f"send ideal_cycle_time_ms, or set the attribute on device {device_id!r}",
        )
    intervals = records.state_intervals(store, project_id, device_id, start, end)
    secs = records.state_seconds(intervals)
    all_time = (end - start).total_seconds()
    if set(secs) == {None}:
        # No state ever recorded: the whole window is taken as planned and running.
        secs = {1: all_time}
    ppt = all_time - secs.get(3, 0.0) - secs.get(None, 0.0)
    down, setup = secs.get(0, 0.0), secs.get(4, 0.0)
    good, rejected = records.unit_counts(store, project_id, device_id, start, end).get(
        device_id, (0.0, 0.0)
    )
    total = good + rejected
    if not (math.isfinite(total) and 0 <= rejected <= total <= MAX_RECORDED_UNITS and good >= 0):
        raise _fail(
            "oee_recorded_counts_out_of_range",
            "$.production_data.total_units_produced",
            f"the units_good ({good:g}) and units_rejected ({rejected:g}) of device "
            f"{device_id!r} in the window must each be 0..{MAX_RECORDED_UNITS:g} in sum",
        )
    return {
        "planned_production_time_hours": ppt / 3600,
        "actual_runtime_hours": max(ppt - down - setup, 0.0) / 3600,
        "ideal_cycle_time_ms": float(ideal),
        "total_units_produced": round(total),
        "good_units": round(good),
        "defects": round(rejected),
        "all_time_hours": all_time / 3600,
        "equipment_failure_hours": down / 3600,
        "setup_hours": setup / 3600,
    }


def recorded_oee(
    store: Store,
    registry: DeviceRegistry,
    project_id: str,
    device_id: str,
    start: datetime,
    end: datetime,
    ideal_cycle_time_ms: float | None = None,
) -> dict[str, Any]:
    data = recorded_production(
        store, registry, project_id, device_id, start, end, ideal_cycle_time_ms
    )
    out = calculate_oee(data)
    out["device_id"] = device_id
    out["production_data"] = data
    out["start_time"], out["end_time"] = rfc3339(start), rfc3339(end)
    return out


def recorded_maintenance(
    store: Store,
    registry: DeviceRegistry,
    alarms: AlarmService,
    project_id: str,
    device_id: str,
    *,
    horizon_hours: float = 168.0,
    lookback_hours: float = 720.0,
    now: datetime | None = None,
) -> dict[str, Any]:
    device = registry.require(project_id, device_id)
    last = records.latest(store, project_id, device_id)
    if not last:
        raise _fail("maintenance_no_data", "$.device_id", f"device {device_id!r} has no readings")
    seen_at = records.from_us(max(ts for _, _, ts in last))  # the device's last reading
    last_at = seen_at if now is None else max(seen_at, now)
    start, end = last_at - timedelta(hours=lookback_hours), last_at + timedelta(microseconds=1)
    # A sensor's failures are its machine's: use the machine's state when it has none itself.
    state_device = device_id
    state_to = last_at
    if not any(m == records.STATE_METRIC for m, _, _ in last) and device.machine != device_id:
        state_device = device.machine
        # The machine's state can be newer than the sensor's readings (the demo's sensors are
        # silent while their machine is stopped): read it to its own last reading, so that a
        # failure and repair after the sensor's last reading are seen.
        state_to = max(
            [last_at]
            + [
                records.from_us(ts) + timedelta(microseconds=1)
                for m, _, ts in records.latest(store, project_id, state_device)
                if m == records.STATE_METRIC
            ]
        )
    intervals = records.state_intervals(store, project_id, state_device, start, state_to)
    fixes = records.repairs(intervals)
    down_now = bool(intervals) and intervals[-1].state == 0
    since = start
    if fixes and (not down_now or len(fixes) > 1):
        since = fixes[-1 if not down_now else -2]["restored_at"]
    # A failure after the device's last reading: its readings show the part that failed (and,
    # once repaired, was replaced), so they no longer predict anything.
    failed_since_seen = bool(fixes) and fixes[-1]["failed_at"] >= seen_at
    rules: dict[str, tuple[float, str]] = {}
    ordered = sorted(
        alarms.rules_for(project_id, device.device_type), key=lambda r: r.severity != "critical"
    )
    for rule in ordered:
        if rule.metric in rules:
            continue
        if rule.max is not None:
            rules[rule.metric] = (rule.max, "increasing")
        elif rule.min is not None:
            rules[rule.metric] = (rule.min, "decreasing")
    metrics: dict[str, MetricHistory] = {}
    for metric, _, _ in last:
        if metric in records.RESERVED_METRICS or metric == "power_kw":
            continue
        t_us, values = records.values_of(
            store, project_id, device_id, metric, since, end, max_points=500
        )
        threshold, direction = rules.get(metric, (None, None))
        metrics[metric] = MetricHistory(
            timestamps=[t / 1e6 for t in t_us],
            values=values,
            failure_threshold=threshold,
            direction=direction,  # type: ignore[arg-type]
        )
    if failed_since_seen:
        metrics = {}  # nothing since the repair (or the unit is still down)
        since = fixes[-1]["failed_at"] if down_now else fixes[-1]["restored_at"]
    out = predict_maintenance(
        {"device_id": device_id, "metrics": metrics, "horizon_hours": horizon_hours}
    )
    if failed_since_seen:
        failed = rfc3339(fixes[-1]["failed_at"])
        if down_now:
            out.update(
                failure_probability=1.0,
                failure_probability_24h=1.0,
                failure_probability_72h=1.0,
                risk_level="critical",
                rul_hours=0.0,
                rul_interval_hours=[0.0, 0.0],
                recommendation=f"{state_device} has been down since {failed}, after this "
                "device's last reading: repair it; the trend restarts with new readings.",
            )
        else:
            out["recommendation"] = (
                f"{state_device} failed at {failed} and was back after repair at "
                f"{rfc3339(fixes[-1]['restored_at'])}, after this device's last reading "
                f"({rfc3339(seen_at)}): no readings since the repair, so no trend yet."
            )
    out["last_failure"] = (
        {
            "failed_at": rfc3339(fixes[-1]["failed_at"]),
            "restored_at": None if down_now else rfc3339(fixes[-1]["restored_at"]),
        }
        if fixes
        else None
    )
    out["reliability"] = reliability_metrics(fixes, observed_from=start, observed_to=state_to)
    out["reliability"]["state_source"] = state_device
    out["history_since"] = rfc3339(since)
    return out


def recorded_energy(
    store: Store,
    project_id: str,
    device_id: str | None,
    start: datetime,
    end: datetime,
    *,
    co2_kg_per_kwh: float | None = None,
    tz: str = "UTC",
) -> dict[str, Any]:
    bucket = 60_000_000 if (end - start) > timedelta(days=3) else None
    rows = records.energy_rows(store, project_id, device_id, start, end, bucket_us=bucket)
    by_device: dict[str, list[tuple[int, float | None, float | None, float | None]]] = {}
    for dev, t, kw, kwh, state in rows:
        by_device.setdefault(dev, []).append((t, kw, kwh, state))
    readings: list[EnergyReading] = []
    for dev, items in by_device.items():
        meter = [i for i in items if i[2] is not None]
        chosen = meter if len(meter) >= 2 else [i for i in items if i[1] is not None]
        if len(chosen) < 2:
            continue
        with_state = all(i[3] is not None for i in chosen)
        for t, kw, kwh, state in chosen:
            readings.append(
                EnergyReading(
                    device_id=dev,
                    timestamp=records.from_us(t),
                    power_kw=None if chosen is meter else kw,
                    energy_kwh=kwh if chosen is meter else None,
                    producing=(state == 1) if with_state else None,
                )
            )
    if not readings:
        raise _fail(
            "energy_no_data",
            "$.device_id",
            "no power_kw or energy_kwh readings (at least 2 per device) in the window",
        )
    counts = records.unit_counts(store, project_id, device_id, start, end)
    out = energy_consumption(
        readings,
        good_units={d: round(g) for d, (g, _) in counts.items()},
        co2_kg_per_kwh=co2_kg_per_kwh,
        tz=tz,
        max_gap_s=900.0 if bucket is None else 3600.0,
    )
    out["start_time"], out["end_time"] = rfc3339(start), rfc3339(end)
    out["resolution"] = "raw" if bucket is None else "1m"
    return out
