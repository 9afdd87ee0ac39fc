"""Request bodies of the Industry 4.0 endpoints (``/api/v1/industry40/...``) as msgspec Structs.

Field names follow ``shared/API.md`` (section Industry 4.0) and the seed's README; fields the
contract does not name are additions and documented here. Times in scheduling requests are
integer **minutes** from the schedule origin (CP-SAT works on integers); every other duration
says its unit in the field name.

:func:`convert` turns a plain ``dict`` (or an already-built Struct) into a Struct and maps a
msgspec error onto :class:`avila.errors.ValidationFailed` with the JSON path of the bad field.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from avila.errors import ValidationFailed

Id = Annotated[str, Meta(min_length=1, max_length=256)]
NonNegative = Annotated[float, Meta(ge=0, le=1e12)]
Positive = Annotated[float, Meta(gt=0, le=1e12)]
Finite = Annotated[float, Meta(ge=-1e15, le=1e15)]
Count = Annotated[int, Meta(ge=0, le=10**12)]
Minutes = Annotated[int, Meta(ge=0, le=10**8)]

T = TypeVar("T", bound=Struct)


# --- OEE -----------------------------------------------------------------------------------


class ProductionData(Struct, kw_only=True):
    """The seed's ``production_data``. ``all_time_hours`` (calendar time, for TEEP) and
    ``equipment_failure_hours`` / ``setup_hours`` / ``startup_rejects`` (to split the six big
    losses) are additions."""

    planned_production_time_hours: NonNegative
    actual_runtime_hours: NonNegative
    ideal_cycle_time_ms: Positive
    total_units_produced: Count
    good_units: Count
    defects: Count | None = None
    actual_cycle_time_ms: Positive | None = None
    all_time_hours: Positive | None = None
    equipment_failure_hours: NonNegative | None = None
    setup_hours: NonNegative | None = None
    startup_rejects: Count | None = None


class OeeRequest(Struct, kw_only=True):
    """``POST /industry40/oee/calculate``: either ``production_data`` or a time range whose
    production data the integrator loads from storage."""

    device_id: Id
    production_data: ProductionData | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


# --- SPC -----------------------------------------------------------------------------------


class QualityInspectRequest(Struct, kw_only=True):
    """``POST /industry40/quality/inspect``. ``chart`` defaults to ``xbar_r`` for
    ``subgroups`` and ``imr`` for ``values``."""

    subgroups: list[list[Finite]] | None = None
    values: list[Finite] | None = None
    chart: Literal["xbar_r", "xbar_s", "imr"] | None = None
    usl: Finite | None = None
    lsl: Finite | None = None
    phase1_subgroups: Annotated[int, Meta(ge=2)] | None = None
    rules: Literal["nelson", "western_electric"] = "nelson"


# --- Scheduling ----------------------------------------------------------------------------


class ScheduleOrder(Struct, kw_only=True):
    """One order (job). ``processing_minutes`` maps each *eligible* machine id to the
    processing time on that machine; ``due_minute`` is soft (tardiness), ``deadline_minute``
    hard; ``release_minute`` is the earliest start."""

    id: Id
    processing_minutes: dict[str, Annotated[int, Meta(ge=1, le=10**7)]]
    due_minute: Minutes | None = None
    deadline_minute: Minutes | None = None
    release_minute: Minutes = 0
    family: Id | None = None
    weight: Annotated[int, Meta(ge=1, le=1000)] = 1


class ProductionOptimizeRequest(Struct, kw_only=True):
    """``POST /industry40/optimize/production``.

    Changeover time from order *a* to order *b* on a machine is, first match wins:
    ``order_changeovers[a][b]``; ``family_changeovers[family(a)][family(b)]``; 0 when both
    orders share a family; ``default_changeover_minutes`` otherwise.
    """

    orders: Annotated[list[ScheduleOrder], Meta(min_length=1, max_length=2000)]
    machines: list[Id] | None = None
    objective: Literal["makespan", "total_tardiness"] = "makespan"
    family_changeovers: dict[str, dict[str, Minutes]] | None = None
    order_changeovers: dict[str, dict[str, Minutes]] | None = None
    default_changeover_minutes: Minutes = 0
    time_limit_s: Annotated[float, Meta(gt=0, le=600)] = 10.0


# --- Maintenance ---------------------------------------------------------------------------


class MetricHistory(Struct, kw_only=True):
    """One metric's history. ``timestamps`` are datetimes or epoch **seconds**.
    ``failure_threshold`` is the value at which the device is considered failed;
    ``direction`` says whether degradation makes the metric rise or fall (inferred from the
    trend when absent)."""

    timestamps: list[datetime | float]
    values: list[Finite]
    failure_threshold: Finite | None = None
    direction: Literal["increasing", "decreasing"] | None = None


class MaintenancePredictRequest(Struct, kw_only=True):
    """``POST /industry40/maintenance/predict``: the contract's body is ``{"device_id"}``; the
    integrator loads ``metrics`` from storage (or a client may send them)."""

    device_id: Id
    metrics: dict[str, MetricHistory] | None = None
    horizon_hours: Positive = 168.0


class RepairEvent(Struct, kw_only=True):
    failed_at: datetime
    restored_at: datetime


# --- Energy / anomaly ----------------------------------------------------------------------


class EnergyReading(Struct, kw_only=True):
    """One meter reading: instantaneous ``power_kw`` and/or cumulative ``energy_kwh``;
    ``producing`` marks whether the machine was producing (for idle energy)."""

    device_id: Id
    timestamp: datetime
    power_kw: Annotated[float, Meta(ge=0, le=1e9)] | None = None
    energy_kwh: Annotated[float, Meta(ge=0, le=1e15)] | None = None
    producing: bool | None = None


class AnomalyDetectRequest(Struct, kw_only=True):
    """``POST /industry40/anomaly/detect``."""

    values: Annotated[list[Finite], Meta(min_length=1)]
    timestamps: list[datetime] | None = None
    window: Annotated[int, Meta(ge=3, le=100_000)] = 30
    # bounded so that infinity (and NaN) are refused: echoed back, they would be JSON null
    threshold: Annotated[float, Meta(gt=0, le=sys.float_info.max)] = 3.5
    min_periods: Annotated[int, Meta(ge=3)] | None = None


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _plain(obj: Any) -> Any:
    """numpy scalars and arrays inside ``obj`` as Python numbers and lists (msgspec is strict
    about ``numpy.float64``)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
        return obj.tolist()
    return obj


def convert(model: type[T], obj: Any) -> T:
    """``obj`` (a dict, or already a ``model``; numpy numbers accepted) as a ``model``; a schema violation raises
    :class:`ValidationFailed` (code ``validation_failed``) whose single detail names the JSON
    path, e.g. ``$.production_data.good_units``."""
    if isinstance(obj, model):
        return obj
    try:
        try:
            return msgspec.convert(obj, model)
        except msgspec.ValidationError as exc:
            if "numpy" not in str(exc):
                raise
            return msgspec.convert(_plain(obj), model)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _AT.search(text)
        path = "$" + match.group("path") if match else "$"
        message = text[: match.start()] if match else text
        raise ValidationFailed(
            f"Invalid {model.__name__}: {text}", details=[{"path": path, "message": message}]
        ) from exc
