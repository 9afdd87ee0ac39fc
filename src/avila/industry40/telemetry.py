"""IoT readings: decoding, per-reading validation and the long (one row per metric) table.

A reading is the seed's body ``{"device_id", "device_type"?, "timestamp"?, "metrics": {name:
number}}``, plus an optional ``attributes`` object (site / line / machine ..., applied when the
device is first registered). A request carries one reading or ``{"readings": [...]}``.

Validation is per reading: a bad reading is rejected with a stable code and the JSON path of the
offending field, and the valid ones are kept. Codes:

* ``invalid_reading`` — shape or type error (missing ``device_id``, ``metrics`` not an object ...);
* ``non_numeric_value`` — a metric value that is not a number (strings, booleans, null);
* ``non_finite_value`` — NaN or ±infinity (accepted as JSON tokens ``NaN``/``Infinity`` or as an
  out-of-range number such as ``1e999`` or a 400-digit integer, then rejected here), in a metric
  or anywhere in ``attributes`` (JSON would store it back as null);
* ``timestamp_in_future`` — more than :data:`FUTURE_TOLERANCE_S` after the server's clock;
* ``batch_limit_exceeded`` — readings past index :data:`MAX_READINGS` - 1 of one request.

The fast path decodes the whole body with a typed msgspec decoder and checks numbers with numpy;
only when that fails is each reading decoded on its own to name what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import numpy as np
import pyarrow as pa
from msgspec import Meta, Struct

from avila.errors import MalformedJSON, ValidationFailed
from avila.schemas.messages import join_path

MAX_READINGS = 10_000
MAX_METRICS = 1_000
FUTURE_TOLERANCE_S = 3600

DeviceId = Annotated[str, Meta(min_length=1, max_length=256)]
MetricName = Annotated[str, Meta(min_length=1, max_length=128)]
DeviceType = Annotated[str, Meta(max_length=128)]

TELEMETRY_SCHEMA = pa.schema(
    [
        ("project_id", pa.string()),
        ("device_id", pa.string()),
        ("ts", pa.timestamp("us")),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("received_at", pa.timestamp("us")),
    ]
)


class Reading(Struct, kw_only=True):
    """One device's measurements at one time (see the module docstring)."""

    device_id: DeviceId
    metrics: Annotated[dict[MetricName, float], Meta(min_length=1, max_length=MAX_METRICS)]
    device_type: DeviceType | None = None
    timestamp: datetime | None = None
    attributes: dict[str, Any] | None = None


class _Batch(Struct):
    readings: list[Reading]


_SINGLE = msgspec.json.Decoder(Reading)
_BATCH = msgspec.json.Decoder(_Batch)


@dataclass(frozen=True)
class Rejection:
    index: int
    code: str
    message: str
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": self.message, "path": self.path}


@dataclass
class ParsedBody:
    """Readings that decoded, each with its index in the request, and the rejections so far."""

    readings: list[tuple[int, Reading]]
    rejected: list[Rejection] = field(default_factory=list)
    single: bool = False


def _path(single: bool, index: int, rest: str = "") -> str:
    """The one path style of every route (``readings[3].metrics.temperature``)."""
    return join_path("" if single else f"readings[{index}]", rest)


def _empty_batch() -> ValidationFailed:
    message = "readings is empty: send at least one reading"
    return ValidationFailed(message, details=[{"path": "readings", "message": message}])


def check_item(item: Any, index: int, single: bool) -> Reading | Rejection:
    """Slow path: one reading as Python objects, with a precise reason when it is bad."""
    if not isinstance(item, dict):
        return Rejection(
            index, "invalid_reading", "a reading must be an object", _path(single, index)
        )
    metrics = item.get("metrics")
    if isinstance(metrics, dict):
        for name, value in metrics.items():
            where = _path(single, index, f".metrics.{name}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                return Rejection(
                    index,
                    "non_numeric_value",
                    f"metric {name!r} is {type(value).__name__}, not a number",
                    where,
                )
            if not _finite(value):
                shown = value if isinstance(value, float) else "beyond ±1.8e308"
                return Rejection(index, "non_finite_value", f"metric {name!r} is {shown}", where)
    attributes = item.get("attributes")
    if isinstance(attributes, dict):
        # JSON has no NaN or infinity: stored, such an attribute would come back as null
        bad = _non_finite_at(attributes, ".attributes")
        if bad is not None:
            return Rejection(
                index,
                "non_finite_value",
                f"attribute {bad[1:].removeprefix('attributes.')!r} is not a finite number",
                _path(single, index, bad),
            )
    try:
        return msgspec.convert(item, Reading)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = text.rfind(" - at `$")
        where = text[at + 7 : -1] if at >= 0 else "$"
        message = text[:at] if at >= 0 else text
        return Rejection(
            index, "invalid_reading", message, _path(single, index, where[1:] if where else "")
        )


def _finite(value: int | float) -> bool:
    """A JSON number a double holds: not NaN / infinity, no integer past ±1.8e308 (1e999 and a
    400-digit integer are the same number)."""
    if isinstance(value, int):
        return -_MAX_INT_AS_DOUBLE <= value <= _MAX_INT_AS_DOUBLE
    return math.isfinite(value)


_MAX_INT_AS_DOUBLE = int(np.finfo(np.float64).max)


def _non_finite_at(obj: Any, where: str) -> str | None:
    """The path of the first non-finite number in a JSON value, or None."""
    if isinstance(obj, float | int) and not isinstance(obj, bool):
        return None if _finite(obj) else where
    if isinstance(obj, dict):
        items = ((f"{where}.{k}", v) for k, v in obj.items())
    elif isinstance(obj, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for at, value in items:
        found = _non_finite_at(value, at)
        if found is not None:
            return found
    return None


def loads_lenient(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        pass
    try:
        # Python's json accepts the NaN / Infinity tokens many producers emit; the readings that
        # carry them are then rejected one by one instead of failing the whole request.
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None


def parse_body(body: bytes, *, max_readings: int = MAX_READINGS) -> ParsedBody:
    """Decode one reading or ``{"readings": [...]}``; raises 400 on malformed JSON and 422
    when the body is neither shape."""
    batch = b'"readings"' in body
    try:
        if batch:
            readings = _BATCH.decode(body).readings
            if not readings:
                raise _empty_batch()
            parsed = ParsedBody(list(enumerate(readings[:max_readings])))
            _limit(parsed, len(readings), max_readings)
            return parsed
        return ParsedBody([(0, _SINGLE.decode(body))], single=True)
    except msgspec.DecodeError:
        pass
    obj = loads_lenient(body)
    if isinstance(obj, dict) and "readings" in obj:
        items = obj["readings"]
        if not isinstance(items, list):
            raise ValidationFailed(
                "readings must be a list",
                details=[{"path": "readings", "message": "expected an array of readings"}],
            )
        if not items:
            raise _empty_batch()
        single = False
    elif isinstance(obj, dict):
        items, single = [obj], True
    else:
        raise ValidationFailed(
            'body must be a reading object or {"readings": [...]}',
            details=[{"path": "", "message": "expected an object"}],
        )
    parsed = ParsedBody([], single=single)
    for index, item in enumerate(items[:max_readings]):
        checked = check_item(item, index, single)
        if isinstance(checked, Rejection):
            parsed.rejected.append(checked)
        else:
            parsed.readings.append((index, checked))
    _limit(parsed, len(items), max_readings)
    return parsed


def _limit(parsed: ParsedBody, count: int, max_readings: int) -> None:
    for index in range(max_readings, count):
        parsed.rejected.append(
            Rejection(
                index,
                "batch_limit_exceeded",
                f"a request takes at most {max_readings} readings; send the rest in another",
                f"readings[{index}]",
            )
        )


def _epoch_us(ts: datetime | None, now_us: int) -> int:
    if ts is None:
        return now_us
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)  # naive timestamps are read as UTC
    return round(ts.timestamp() * 1_000_000)


@dataclass
class TelemetryRows:
    """Validated readings of one project as the ``telemetry`` table's rows."""

    project_id: str
    readings: list[Reading]
    #: reading time per reading, epoch microseconds (UTC)
    ts_us: np.ndarray
    table: pa.Table

    def __len__(self) -> int:
        return len(self.readings)


def build_rows(
    project_id: str,
    indexed: list[tuple[int, Reading]],
    *,
    now: datetime | None = None,
    single: bool = False,
) -> tuple[TelemetryRows, list[Rejection]]:
    """Check values and timestamps (vectorised) and lay valid readings out long."""
    now_dt = now or datetime.now(UTC)
    now_us = round(now_dt.timestamp() * 1_000_000)
    readings = [r for _, r in indexed]
    ts_us = np.fromiter((_epoch_us(r.timestamp, now_us) for r in readings), np.int64, len(readings))
    counts = np.fromiter((len(r.metrics) for r in readings), np.int64, len(readings))
    values = np.fromiter(
        (v for r in readings for v in r.metrics.values()), np.float64, int(counts.sum())
    )
    rejected: list[Rejection] = []
    bad = ts_us > now_us + FUTURE_TOLERANCE_S * 1_000_000
    finite = np.isfinite(values)
    if not finite.all():
        owner = np.repeat(np.arange(len(readings)), counts)
        bad[owner[~finite]] = True
    if bad.any():
        keep = []
        for pos, (index, reading) in enumerate(indexed):
            if not bad[pos]:
                keep.append((index, reading))
            elif ts_us[pos] > now_us + FUTURE_TOLERANCE_S * 1_000_000:
                rejected.append(
                    Rejection(
                        index,
                        "timestamp_in_future",
                        f"timestamp is more than {FUTURE_TOLERANCE_S} s after the server's "
                        f"clock ({now_dt.isoformat()})",
                        _path(single, index, ".timestamp"),
                    )
                )
            else:
                name = next(k for k, v in reading.metrics.items() if not math.isfinite(v))
                rejected.append(
                    Rejection(
                        index,
                        "non_finite_value",
                        f"metric {name!r} is {reading.metrics[name]}",
                        _path(single, index, f".metrics.{name}"),
                    )
                )
        rows, _ = build_rows(project_id, keep, now=now_dt, single=single)
        return rows, rejected
    n = len(values)
    owner = np.repeat(np.arange(len(readings)), counts)
    device = pa.array([r.device_id for r in readings], pa.string()).take(owner)
    table = pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar(project_id, pa.string()), n),
            device,
            pa.array(ts_us[owner], pa.int64()).cast(pa.timestamp("us")),
            pa.array([k for r in readings for k in r.metrics], pa.string()),
            pa.array(values, pa.float64()),
            pa.repeat(pa.scalar(now_us, pa.int64()), n).cast(pa.timestamp("us")),
        ],
        schema=TELEMETRY_SCHEMA,
    )
    return TelemetryRows(project_id, readings, ts_us, table), rejected
