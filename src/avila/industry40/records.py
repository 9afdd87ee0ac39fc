"""What the Industry 4.0 endpoints read back from telemetry: series with 1 min / 1 h rollups,
machine states, production counts, repairs and energy readings.

**Rollups** are computed on query with DuckDB's ``time_bucket`` (no materialised table to keep
in step with late or re-sent readings): ``resolution`` ``raw`` | ``1m`` | ``1h`` | ``auto``;
``auto`` is raw up to 6 h, 1 min up to 14 days, 1 h beyond. A bucket reports ``avg``, ``min``,
``max``, ``count`` and ``last`` (the value of the latest reading) at the bucket's start.

**Reserved metrics** (any device may send them; see docs/industry40.md):

* ``state`` — 1 running, 0 down (unplanned failure), 2 idle / minor stop, 3 planned stop
  (break, no shift, planned maintenance), 4 setup / changeover. A state holds until the next
  ``state`` reading (sample-and-hold). A failure is a change into 0; the repair is the next
  change out of 0.
* ``units_good``, ``units_rejected`` — units made since the previous reading (increments).
* ``power_kw`` (instantaneous) and ``energy_kwh`` (cumulative meter) for energy.

Every time argument is an aware datetime or naive UTC; results use RFC 3339 UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from avila.analytics.common import fragments
from avila.errors import ValidationFailed
from avila.industry40.devices import rfc3339
from avila.storage.base import Store

STATE_METRIC = "state"
COUNT_METRICS = ("units_good", "units_rejected")
ENERGY_METRICS = ("power_kw", "energy_kwh")
RESERVED_METRICS = frozenset({STATE_METRIC, *COUNT_METRICS, "energy_kwh"})
STATES = {1: "running", 0: "down", 2: "idle", 3: "planned_stop", 4: "setup"}
RAW_LIMIT = 20_000

Resolution = Literal["raw", "1m", "1h", "auto"]
_BUCKET_US = {"1m": 60_000_000, "1h": 3_600_000_000}


def naive_utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


#: Longest telemetry window a query may span (rollups are per hour and device).
MAX_WINDOW = timedelta(days=366)


def window(
    start: datetime | None, end: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    """Aware (start, end); ``end`` defaults to now, ``start`` to ``end - default``."""
    end = end.astimezone(UTC) if end and end.tzinfo else (end.replace(tzinfo=UTC) if end else None)
    end = end or datetime.now(UTC)
    if start is None:
        start = end - default
    elif start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if start >= end:
        raise ValidationFailed(
            "end_time must be after start_time",
            code="invalid_time_range",
            details=[{"path": "end_time", "message": "end_time must be after start_time"}],
        )
    if end - start > MAX_WINDOW:
        days = (end - start).days
        message = f"the time range is {days:,} days; the limit is {MAX_WINDOW.days:,} days"
        raise ValidationFailed(
            message,
            code="time_range_too_long",
            details=[{"path": "start_time", "message": message}],
        )
    return start, end


def choose_resolution(start: datetime, end: datetime, resolution: Resolution) -> str:
    if resolution != "auto":
        return resolution
    span = (end - start).total_seconds()
    return "raw" if span <= 6 * 3600 else "1m" if span <= 14 * 86400 else "1h"


_WHERE = "project_id = ? AND device_id = ? AND ts >= ? AND ts < ?"


def epoch_us(store: Store, ts_sql: str) -> str:
    """Microseconds since the epoch of the timestamp expression ``ts_sql``, in the store's SQL."""
    return fragments(store)["epoch_us"].format(ts_sql)


def bucket(store: Store, width_us_sql: str, ts_sql: str) -> str:
    """Start of the ``width_us_sql``-microsecond bucket holding ``ts_sql`` (a timestamp)."""
    return fragments(store)["time_bucket_us"].format(width_us_sql, ts_sql)


def series(
    store: Store,
    project_id: str,
    device_id: str,
    metrics: Sequence[str] | None,
    start: datetime,
    end: datetime,
    resolution: Resolution = "auto",
) -> dict[str, Any]:
    """``{"resolution", "series": {metric: [point, ...]}, "truncated"}``; raw points are
    ``{"timestamp", "value"}``, rollup points ``{"timestamp", "avg", "min", "max", "count",
    "last"}``."""
    res = choose_resolution(start, end, resolution)
    params: list[Any] = [project_id, device_id, naive_utc(start), naive_utc(end)]
    metric_sql = ""
    if metrics:
        metric_sql = f" AND metric IN ({', '.join('?' for _ in metrics)})"
        params.extend(metrics)
    out: dict[str, list[dict[str, Any]]] = {}
    truncated = False
    if res == "raw":
        rows = store.query(
            f"SELECT metric, {epoch_us(store, 'ts')}, value FROM telemetry"
            f" WHERE {_WHERE}{metric_sql}"
            f" ORDER BY metric, ts LIMIT {RAW_LIMIT + 1}",
            params,
        )
        truncated = len(rows) > RAW_LIMIT
        for metric, ts, value in rows[:RAW_LIMIT]:
            out.setdefault(metric, []).append({"timestamp": rfc3339(from_us(ts)), "value": value})
    else:
        rows = store.query(
            f"SELECT metric, {epoch_us(store, bucket(store, '?', 'ts'))} AS b,"
            f" avg(value), min(value), max(value), count(*), argMax(value, ts)"
            f" FROM telemetry WHERE {_WHERE}{metric_sql} GROUP BY metric, b ORDER BY metric, b",
            [_BUCKET_US[res], *params],
        )
        for metric, b, avg, lo, hi, count, last in rows:
            out.setdefault(metric, []).append(
                {
                    "timestamp": rfc3339(from_us(b)),
                    "avg": avg,
                    "min": lo,
                    "max": hi,
                    "count": count,
                    "last": last,
                }
            )
    return {"resolution": res, "series": out, "truncated": truncated}


def values_of(
    store: Store,
    project_id: str,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    *,
    max_points: int = 100_000,
) -> tuple[list[int], list[float]]:
    """(epoch µs, value) of one metric, averaged into equal buckets when there are more than
    ``max_points`` readings."""
    params = [project_id, device_id, naive_utc(start), naive_utc(end), metric]
    (count,) = store.query(f"SELECT count(*) FROM telemetry WHERE {_WHERE} AND metric = ?", params)[
        0
    ]
    if count <= max_points:
        rows = store.query(
            f"SELECT {epoch_us(store, 'ts')}, value FROM telemetry WHERE {_WHERE} AND metric = ?"
            " ORDER BY ts",
            params,
        )
    else:
        width = max(1, int((end - start).total_seconds() * 1_000_000 / max_points) + 1)
        rows = store.query(
            f"SELECT {epoch_us(store, bucket(store, '?', 'ts'))} AS b, avg(value)"
            f" FROM telemetry WHERE {_WHERE} AND metric = ? GROUP BY b ORDER BY b",
            [width, *params],
        )
    return [int(r[0]) for r in rows], [float(r[1]) for r in rows]


def latest(store: Store, project_id: str, device_id: str) -> list[tuple[str, float, int]]:
    """(metric, latest value, its epoch µs) for every metric the device ever sent."""
    return store.query(
        f"SELECT metric, argMax(value, ts), {epoch_us(store, 'max(ts)')} FROM telemetry"
        " WHERE project_id = ? AND device_id = ? GROUP BY metric ORDER BY metric",
        [project_id, device_id],
    )


@dataclass(frozen=True)
class Interval:
    state: int | None  # None: unknown (before the first state reading)
    start_us: int
    end_us: int

    @property
    def seconds(self) -> float:
        return (self.end_us - self.start_us) / 1e6


def state_intervals(
    store: Store, project_id: str, device_id: str, start: datetime, end: datetime
) -> list[Interval]:
    """The machine's states over [start, end), sample-and-hold, clipped to the window."""
    s, e = naive_utc(start), naive_utc(end)
    prior = store.query(
        f"SELECT {fragments(store)['arg_max'].format('value', 'ts')} FROM telemetry"
        " WHERE project_id = ? AND device_id = ?"
        " AND metric = 'state' AND ts < ?",
        [project_id, device_id, s],
    )[0][0]
    rows = store.query(
        f"SELECT {epoch_us(store, 'ts')}, value FROM telemetry WHERE {_WHERE}"
        " AND metric = 'state'"
        " ORDER BY ts",
        [project_id, device_id, s, e],
    )
    start_us = round(start.timestamp() * 1e6)
    end_us = round(end.timestamp() * 1e6)
    out: list[Interval] = []
    current = None if prior is None else int(prior)
    at = start_us
    for ts, value in rows:
        code = int(value)
        if code == current:
            continue
        if ts > at:
            out.append(Interval(current, at, ts))
        current, at = code, max(at, ts)
    if end_us > at:
        out.append(Interval(current, at, end_us))
    return out


def state_seconds(intervals: list[Interval]) -> dict[int | None, float]:
    totals: dict[int | None, float] = {}
    for i in intervals:
        totals[i.state] = totals.get(i.state, 0.0) + i.seconds
    return totals


def repairs(intervals: list[Interval]) -> list[dict[str, datetime]]:
    """Failure → restoration events: each run of ``down`` intervals (an ongoing one ends at the
    window's end)."""
    out: list[dict[str, datetime]] = []
    for i in intervals:
        if i.state != 0:
            continue
        if out and out[-1]["restored_at"] == from_us(i.start_us):
            out[-1]["restored_at"] = from_us(i.end_us)
        else:
            out.append({"failed_at": from_us(i.start_us), "restored_at": from_us(i.end_us)})
    return out


def unit_counts(
    store: Store, project_id: str, device_id: str | None, start: datetime, end: datetime
) -> dict[str, tuple[float, float]]:
    """device -> (good units, rejected units) over the window."""
    device_sql = " AND device_id = ?" if device_id else ""
    params: list[Any] = [project_id, naive_utc(start), naive_utc(end)]
    if device_id:
        params.append(device_id)
    rows = store.query(
        "SELECT device_id, coalesce(sum(value) FILTER (WHERE metric = 'units_good'), 0),"
        " coalesce(sum(value) FILTER (WHERE metric = 'units_rejected'), 0) FROM telemetry"
        " WHERE project_id = ? AND ts >= ? AND ts < ? AND metric IN ('units_good',"
        f" 'units_rejected'){device_sql} GROUP BY device_id",
        params,
    )
    return {d: (float(g), float(r)) for d, g, r in rows}


def energy_rows(
    store: Store,
    project_id: str,
    device_id: str | None,
    start: datetime,
    end: datetime,
    *,
    bucket_us: int | None = None,
) -> list[tuple[str, int, float | None, float | None, float | None]]:
    """(device, epoch µs, power_kw, energy_kwh, state at that time) per reading time, or per
    bucket (mean power, last meter value) when ``bucket_us`` is given."""
    device_sql = " AND device_id = ?" if device_id else ""
    params: list[Any] = [project_id, naive_utc(start), naive_utc(end)]
    if device_id:
        params.append(device_id)
    frag = fragments(store)
    t = "ts" if bucket_us is None else bucket(store, "?", "ts")
    bucket_params: list[Any] = [] if bucket_us is None else [bucket_us]
    sql = f"""
        WITH e AS (
            SELECT device_id, {t} AS t,
                   avg({frag["nullable"].format("value")})
                       FILTER (WHERE metric = 'power_kw') AS power_kw,
                   {frag["arg_max"].format("value", "ts")}
                       FILTER (WHERE metric = 'energy_kwh') AS energy_kwh
            FROM telemetry
            WHERE project_id = ? AND ts >= ? AND ts < ? AND metric IN ('power_kw', 'energy_kwh')
                  {device_sql}
            GROUP BY device_id, t),
        s AS (
            SELECT device_id, ts, value AS state FROM telemetry
            WHERE project_id = ? AND metric = 'state' AND ts < ? {device_sql}),
        -- The state at each time is the last state reading at or before it (kind 0 sorts a
        -- state before an energy row of the same instant). A window over the union measured
        -- 50x faster than the equivalent ASOF LEFT JOIN on a week of 1-minute data.
        u AS (
            SELECT device_id, t, 1 AS kind, power_kw, energy_kwh, {frag["null_double"]} AS state
            FROM e
            UNION ALL
            SELECT device_id, ts, 0, NULL, NULL, state FROM s),
        w AS (
            SELECT device_id, t, kind, power_kw, energy_kwh,
                   {frag["last_non_null"].format("state")} OVER (
                       PARTITION BY device_id ORDER BY t, kind ROWS UNBOUNDED PRECEDING) AS state
            FROM u)
        SELECT device_id, {epoch_us(store, "t")}, power_kw, energy_kwh, state
        FROM w WHERE kind = 1
        ORDER BY device_id, t"""
    state_params: list[Any] = [project_id, naive_utc(end)]
    if device_id:
        state_params.append(device_id)
    return store.query(sql, [*bucket_params, *params, *state_params])
