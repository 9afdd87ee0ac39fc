"""Overall Equipment Effectiveness (OEE), TEEP and the six big losses.

Definitions from oee.com ("OEE Calculation", "TEEP", "Six Big Losses"), as fixed in
``shared/REFERENCES.md``:

* Planned Production Time (PPT) = shift length − planned breaks
* Run Time = PPT − stop time;              Availability = Run Time / PPT
* Performance = (Ideal Cycle Time × Total Count) / Run Time
* Quality = Good Count / Total Count
* OEE = Availability × Performance × Quality = Good Count × Ideal Cycle Time / PPT
* TEEP = OEE × PPT / All Time (all time = calendar time, 24 h a day)

World class is OEE 85 % (Availability 90 %, Performance 95 %, Quality 99.9 %).

**Performance above 1.** An ideal cycle time set too slow makes the raw performance exceed 1.
We report ``performance_raw`` unchanged, cap ``performance`` (and hence ``oee``) at 1 and set
``performance_capped: true`` so that every reported fraction stays in [0, 1].

**Run time (near) zero.** Performance = ideal cycle time × total count / run time has no
value when units were counted in no run time (x / 0) or when the ratio is past the largest
double (a run time of ~1e-300 h): that is a performance above 1 without a number, so
``performance_raw`` is ``None`` (JSON ``null``), ``performance`` is capped at 1 and
``performance_capped`` is true; availability stays run time / PPT (0 for no run time). With no units and no run time (0 / 0, nothing made) performance is 0, as with no units.

**Losses** are expressed as time (hours) so the three categories add up to
PPT − fully productive time:

* availability loss = PPT − Run Time = equipment failure + setup & adjustments
* performance loss = Run Time − Ideal Cycle × Total = idling & minor stops + reduced speed
* quality loss = Ideal Cycle × (Total − Good) = process defects + reduced yield

A category is split into its two big losses only when the input says how (failure / setup
time; ``actual_cycle_time_ms`` for reduced speed; ``startup_rejects`` for reduced yield);
otherwise the unsplit parts are ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from avila.errors import ValidationFailed
from avila.schemas.industry40 import ProductionData, convert

__all__ = ["WORLD_CLASS", "calculate_oee", "classify_oee", "oee_from_shift"]

#: oee.com world-class targets.
WORLD_CLASS: dict[str, float] = {
    "oee": 0.85,
    "availability": 0.90,
    "performance": 0.95,
    "quality": 0.999,
}


def classify_oee(oee: float) -> str:
    """oee.com bands: ``world_class`` (≥ 85 %), ``typical`` (≥ 60 %), ``low`` (≥ 40 %),
    ``very_low``."""
    if oee >= WORLD_CLASS["oee"]:
        return "world_class"
    if oee >= 0.60:
        return "typical"
    if oee >= 0.40:
        return "low"
    return "very_low"


def _fail(code: str, path: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=[{"path": path, "message": message}])


def calculate_oee(production_data: ProductionData | Mapping[str, Any]) -> dict[str, Any]:
    """OEE from the seed's ``production_data`` body (hours, milliseconds, unit counts).

    Returns ``{"availability", "performance", "performance_raw", "performance_capped",
    "quality", "oee", "teep"? (only with ``all_time_hours``), "classification",
    "below_world_class": [component, ...], "losses": {...hours...},
    "planned_production_time_hours", "run_time_hours", "fully_productive_time_hours",
    "performance_from_cycle_times"? (ideal / actual cycle time, when the actual is given)}``.

    With no units produced, performance and quality are 0 (nothing good was made); with units
    but a run time of 0 (or one so small the ratio is past any double) ``performance_raw`` is
    ``None`` and performance is capped at 1 (module docs). Raises
    :class:`ValidationFailed` with codes ``oee_good_exceeds_total``,
    ``oee_defects_exceed_total``, ``oee_runtime_exceeds_planned``,
    ``oee_planned_time_zero``, ``oee_all_time_below_planned`` and
    ``oee_loss_breakdown_exceeds_stop_time``.
    """
    d = convert(ProductionData, production_data)
    base = "$.production_data"
    if d.good_units > d.total_units_produced:
        raise _fail(
            "oee_good_exceeds_total",
            f"{base}.good_units",
            f"good_units ({d.good_units}) exceeds total_units_produced ({d.total_units_produced})",
        )
    if d.defects is not None and d.defects + d.good_units > d.total_units_produced:
        raise _fail(
            "oee_defects_exceed_total",
            f"{base}.defects",
            "good_units + defects exceeds total_units_produced",
        )
    if d.planned_production_time_hours <= 0:
        raise _fail(
            "oee_planned_time_zero",
            f"{base}.planned_production_time_hours",
            "planned_production_time_hours must be > 0",
        )
    if d.actual_runtime_hours > d.planned_production_time_hours:
        raise _fail(
            "oee_runtime_exceeds_planned",
            f"{base}.actual_runtime_hours",
            "actual_runtime_hours exceeds planned_production_time_hours",
        )
    if d.all_time_hours is not None and d.all_time_hours < d.planned_production_time_hours:
        raise _fail(
            "oee_all_time_below_planned",
            f"{base}.all_time_hours",
            "all_time_hours is less than planned_production_time_hours",
        )
    ppt = d.planned_production_time_hours
    run = d.actual_runtime_hours
    ideal_h = d.ideal_cycle_time_ms / 3_600_000.0
    total = d.total_units_produced
    good = d.good_units

    availability = run / ppt
    # None: units counted in no run time, or a ratio past the largest double (module docs)
    performance_raw: float | None = 0.0
    if total:
        ratio = ideal_h * total / run if run > 0 else math.inf
        performance_raw = ratio if math.isfinite(ratio) else None
    performance = 1.0 if performance_raw is None else min(performance_raw, 1.0)
    quality = good / total if total else 0.0
    oee = availability * performance * quality

    out: dict[str, Any] = {
        "availability": availability,
        "performance": performance,
        "performance_raw": performance_raw,
        "performance_capped": performance_raw is None or performance_raw > 1.0,
        "quality": quality,
        "oee": oee,
    }
    if d.all_time_hours is not None:
        out["teep"] = oee * ppt / d.all_time_hours
    out["classification"] = classify_oee(oee)
    out["below_world_class"] = [
        k for k in ("availability", "performance", "quality") if out[k] < WORLD_CLASS[k]
    ]
    if d.actual_cycle_time_ms is not None:
        out["performance_from_cycle_times"] = min(
            d.ideal_cycle_time_ms / d.actual_cycle_time_ms, 1.0
        )
    out["planned_production_time_hours"] = ppt
    out["run_time_hours"] = run
    out["fully_productive_time_hours"] = ppt * oee
    out["losses"] = _losses(d, ppt, run, ideal_h, performance_raw)
    return out


def _losses(
    d: ProductionData, ppt: float, run: float, ideal_h: float, performance_raw: float | None
) -> dict[str, float | None]:
    availability_loss = ppt - run
    # When performance is capped, the excess "speed gain" is not a loss; keep losses ≥ 0 and
    # consistent with the capped OEE.
    net_run = min(ideal_h * d.total_units_produced, run)
    performance_loss = run - net_run
    total = d.total_units_produced
    quality_loss = net_run * (1 - d.good_units / total) if total else 0.0

    failure = d.equipment_failure_hours
    setup = d.setup_hours
    if failure is not None or setup is not None:
        known = (failure or 0.0) + (setup or 0.0)
        if known > availability_loss + 1e-9:
            raise _fail(
                "oee_loss_breakdown_exceeds_stop_time",
                "$.production_data.equipment_failure_hours",
                "equipment_failure_hours + setup_hours exceeds the stop time "
                "(planned_production_time_hours - actual_runtime_hours)",
            )
        if failure is None:
            failure = availability_loss - known
        elif setup is None:
            setup = availability_loss - known

    reduced_speed = idling = None
    if d.actual_cycle_time_ms is not None and performance_raw is not None and performance_raw <= 1:
        actual_h = d.actual_cycle_time_ms / 3_600_000.0
        reduced_speed = min(max(actual_h - ideal_h, 0.0) * d.total_units_produced, performance_loss)
        idling = performance_loss - reduced_speed

    process_defects = reduced_yield = None
    if d.startup_rejects is not None:
        rejects = d.total_units_produced - d.good_units
        startup = min(d.startup_rejects, rejects)
        share = startup / rejects if rejects else 0.0
        reduced_yield = quality_loss * share
        process_defects = quality_loss - reduced_yield

    return {
        "availability_loss_hours": availability_loss,
        "performance_loss_hours": performance_loss,
        "quality_loss_hours": quality_loss,
        "equipment_failure_hours": failure,
        "setup_and_adjustments_hours": setup,
        "idling_and_minor_stops_hours": idling,
        "reduced_speed_hours": reduced_speed,
        "process_defects_hours": process_defects,
        "reduced_yield_hours": reduced_yield,
    }


def oee_from_shift(
    *,
    shift_minutes: float,
    planned_break_minutes: float = 0.0,
    stop_minutes: float = 0.0,
    ideal_cycle_time_s: float,
    total_count: int,
    reject_count: int,
    all_time_minutes: float | None = None,
    equipment_failure_minutes: float | None = None,
    setup_minutes: float | None = None,
    startup_rejects: int | None = None,
) -> dict[str, Any]:
    """OEE from a shift definition, the way oee.com's worked example states it (minutes,
    seconds, counts). Same output as :func:`calculate_oee`.

    >>> r = oee_from_shift(shift_minutes=480, planned_break_minutes=60, stop_minutes=47,
    ...                    ideal_cycle_time_s=1.0, total_count=19271, reject_count=423)
    >>> [round(100 * r[k], 2) for k in ("availability", "performance", "quality", "oee")]
    [88.81, 86.11, 97.8, 74.79]
    """
    if planned_break_minutes > shift_minutes:
        raise _fail(
            "oee_breaks_exceed_shift",
            "$.planned_break_minutes",
            "planned_break_minutes exceeds shift_minutes",
        )
    if reject_count > total_count:
        raise _fail("oee_good_exceeds_total", "$.reject_count", "reject_count exceeds total_count")
    ppt_min = shift_minutes - planned_break_minutes
    if stop_minutes > ppt_min:
        raise _fail(
            "oee_runtime_exceeds_planned",
            "$.stop_minutes",
            "stop_minutes exceeds planned production time (shift - breaks)",
        )
    body: dict[str, Any] = {
        "planned_production_time_hours": ppt_min / 60.0,
        "actual_runtime_hours": (ppt_min - stop_minutes) / 60.0,
        "ideal_cycle_time_ms": ideal_cycle_time_s * 1000.0,
        "total_units_produced": total_count,
        "good_units": total_count - reject_count,
        "defects": reject_count,
    }
    if all_time_minutes is not None:
        body["all_time_hours"] = all_time_minutes / 60.0
    if equipment_failure_minutes is not None:
        body["equipment_failure_hours"] = equipment_failure_minutes / 60.0
    if setup_minutes is not None:
        body["setup_hours"] = setup_minutes / 60.0
    if startup_rejects is not None:
        body["startup_rejects"] = startup_rejects
    return calculate_oee(body)
