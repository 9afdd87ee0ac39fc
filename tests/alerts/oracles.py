"""Plain-Python oracles for alert metrics, written from docs/alerts.md (not from the SQL)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

BASELINE_WINDOWS = 24


@dataclass(frozen=True)
class Ev:
    user: str
    type: str  # snake_case
    key: str  # url / name / product_id / order_id ("" when the type has none)
    ts: datetime
    revenue: float = 0.0


def matches(ev: Ev, condition_type: str, value: str, match: str = "exact") -> bool:
    if ev.type != condition_type:
        return False
    if value == "":
        return True
    if match == "prefix":
        return ev.key.startswith(value)
    if match == "contains":
        return value in ev.key
    return ev.key == value


def in_window(ts: datetime, at: datetime, window_seconds: int) -> bool:
    return at - timedelta(seconds=window_seconds) <= ts <= at


def event_count(
    events: list[Ev], at: datetime, window: int, ctype: str, value: str = "", match: str = "exact"
) -> float:
    return float(
        sum(1 for e in events if in_window(e.ts, at, window) and matches(e, ctype, value, match))
    )


def conversion_rate(
    events: list[Ev], at: datetime, window: int, first: tuple[str, str], second: tuple[str, str]
) -> float | None:
    started: dict[str, datetime] = {}
    for e in events:
        if in_window(e.ts, at, window) and matches(e, *first):
            started[e.user] = min(started.get(e.user, e.ts), e.ts)
    if not started:
        return None
    converted = {
        e.user
        for e in events
        if e.user in started
        and in_window(e.ts, at, window)
        and matches(e, *second)
        and e.ts >= started[e.user]
    }
    return len(converted) / len(started)


def window_index(ts: datetime, at: datetime, window: int) -> int | None:
    """0 for the current window [at - w, at], k for [at - (k+1)w, at - kw); None outside."""
    width = timedelta(seconds=window)
    if at - width <= ts <= at:
        return 0
    for k in range(1, BASELINE_WINDOWS + 1):
        if at - (k + 1) * width <= ts < at - k * width:
            return k
    return None


def anomaly_score(events: list[Ev], at: datetime, window: int, series: str) -> float | None:
    totals = [0.0] * (BASELINE_WINDOWS + 1)
    for e in events:
        k = window_index(e.ts, at, window)
        if k is None:
            continue
        if series == "events":
            totals[k] += 1
        elif e.type == "purchase":
            totals[k] += e.revenue
    current, baseline = totals[0], totals[1:]
    if not any(baseline):
        return None
    med = statistics.median(baseline)
    mad = statistics.median([abs(b - med) for b in baseline])
    if mad > 0:
        return 0.6745 * (current - med) / mad
    mean_ad = statistics.fmean([abs(b - med) for b in baseline])
    if mean_ad > 0:
        return (current - med) / (1.2533 * mean_ad)
    return 0.0 if current == med else (1e9 if current > med else -1e9)


@dataclass(frozen=True)
class Reading:
    device: str
    device_type: str
    metric: str
    value: float
    ts: datetime


def telemetry(
    readings: list[Reading],
    at: datetime,
    window: int,
    metric: str,
    aggregate: str,
    device_id: str | None = None,
    device_type: str | None = None,
) -> float | None:
    chosen = [
        r
        for r in readings
        if r.metric == metric
        and in_window(r.ts, at, window)
        and (device_id is None or r.device == device_id)
        and (device_type is None or r.device_type == device_type)
    ]
    if not chosen:
        return None
    values = [r.value for r in chosen]
    if aggregate == "max":
        return max(values)
    if aggregate == "min":
        return min(values)
    if aggregate == "avg":
        return sum(values) / len(values)
    return max(chosen, key=lambda r: r.ts).value
