"""Conversion funnels.

Semantics (shared/REFERENCES.md, "Funnel"): per user, a step-1 event starts a chain; step k+1
counts when step k was reached and the event's time is <= the chain's step-1 time + window (the
window runs from step 1 to the last step). A user's level is the deepest step any chain reached;
the step-k count is the number of users whose level >= k.

Modes:

* ``ordered`` (default) — ClickHouse ``windowFunnel``: steps in time order, equal timestamps
  allowed, other events in between allowed. As in ClickHouse, an event matching several steps'
  conditions counts for each of them (make repeated steps distinguishable by their values).
* ``strict_increase`` — as ``ordered`` but each step's time is strictly after the previous step's.
* ``strict_order`` — ClickHouse ``windowFunnel(...)('strict_order')`` literally: once a step-1
  event was seen, any event matching no step, or a step whose previous step was not reached,
  ends the user's evaluation. Computed per user in Python (slower).
* ``unordered`` — the level is the largest number of distinct steps done within one window that
  starts at any step event. Computed per user in Python (slower).

Time to convert to step k (seconds): for each user who reached k, the time between the first
event that completed step k and the latest step-(k-1) completion the chain extended from
(unordered: the gap between the (k-1)-th and k-th distinct steps of the user's first best
window). Median and mean are over those users.

``breakdown`` groups users by the property's value on their first step-1 event in range; the
``breakdown_limit`` most frequent values are kept and the rest are reported as ``"Other"``.
``trend`` buckets users by the day/week (in ``timezone``) of that first step-1 event.
``total_users`` is the number of users who entered the funnel (did step 1).

The ordered modes are vectorised with numpy: after sorting candidate rows by (user, time), the
latest valid step-(k-1) row at or before each step-k row (an "as-of" lookup via a running max of
row positions) carries the latest chain start, which is the best one for the window check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from avila.analytics.common import (
    OTHER,
    bucket_array,
    bucket_label,
    bucket_of,
    condition_expr,
    events_source,
    fragments,
    invalid,
    local_us_array,
    parse_query,
    property_expr,
    rate,
    time_range,
    user_codes,
    where_clause,
    zone,
)
from avila.schemas.analytics import EventCondition, FunnelQuery
from avila.storage.base import Store

MIN_STEPS = 2
MAX_STEPS = 20


def funnel(store: Store, project_id: str, query: FunnelQuery | Mapping[str, Any]) -> dict[str, Any]:
    """Funnel report for ``project_id`` (see the module docstring for the semantics).

    Returns ``{"funnel_name", "steps": [...], "overall_conversion_rate", "total_users", "mode",
    "conversion_window_seconds"}`` plus ``"breakdowns"`` / ``"trend"`` when asked for.
    """
    q = parse_query(FunnelQuery, query)
    if len(q.steps) < MIN_STEPS:
        raise invalid("funnel_needs_two_steps", "steps", "a funnel needs at least 2 steps")
    if len(q.steps) > MAX_STEPS:
        raise invalid("funnel_too_many_steps", "steps", f"a funnel has at most {MAX_STEPS} steps")
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    conds = [
        condition_expr(
            store,
            EventCondition(s.condition_type, s.condition_value, s.match),
            f"steps[{i}]",
        )
        for i, s in enumerate(q.steps)
    ]
    where = where_clause(store, project_id, start, end, q.filters)
    breakdown = property_expr(store, q.breakdown, "breakdown") if q.breakdown else None

    mask_sql = " + ".join(
        f"(CASE WHEN {c.sql} THEN {1 << i} ELSE 0 END)" for i, c in enumerate(conds)
    )
    params: list[Any] = [p for c in conds for p in c.params]
    select = f"user_id, {fragments(store)['epoch_us'].format('ts')} AS t, {mask_sql} AS m"
    if breakdown is not None:
        select += f", {breakdown.sql} AS b"
        params.extend(breakdown.params)
    sql = f"SELECT {select} FROM {events_source(store, project_id)} WHERE {where.sql}"
    params.extend(where.params)
    if q.mode != "strict_order":  # strict_order needs the other events too
        sql += " AND (" + " OR ".join(c.sql for c in conds) + ")"
        params.extend(p for c in conds for p in c.params)
    sql += " ORDER BY user_id, t"
    table = store.query_arrow(sql, params)

    nsteps = len(q.steps)
    window_us = q.conversion_window_seconds * 1_000_000
    ucode = user_codes(table.column("user_id"))
    t = _int64(table.column("t"))
    masks = _int64(table.column("m"))
    if q.mode in ("ordered", "strict_increase"):
        levels = _ordered_levels(ucode, t, masks, nsteps, window_us, q.mode == "strict_increase")
    else:
        fn = _strict_order_user if q.mode == "strict_order" else _unordered_user
        levels = _per_user_levels(ucode, t, masks, nsteps, window_us, fn)
    level, conv, first_row = levels

    entered = level >= 1
    names = [s.name or _default_name(s.condition_type, s.condition_value) for s in q.steps]
    result: dict[str, Any] = {
        "funnel_name": q.funnel_name,
        "mode": q.mode,
        "conversion_window_seconds": q.conversion_window_seconds,
    }
    all_users = np.flatnonzero(entered)
    steps = _step_stats(names, level[all_users], conv[all_users])
    result["steps"] = steps
    result["overall_conversion_rate"] = steps[-1]["conversion_rate"]
    result["total_users"] = steps[0]["count"]
    if breakdown is not None:
        result["breakdown"] = q.breakdown
        result["breakdowns"] = _breakdowns(
            table.column("b"), first_row, all_users, level, conv, names, q.breakdown_limit
        )
    if q.trend is not None:
        result["trend"] = _trend(t, first_row, all_users, level, nsteps, q.trend, tz, start, end)
    return result


def _default_name(condition_type: str, value: str) -> str:
    return f"{condition_type} {value}".strip()


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_numpy(), dtype=np.int64)


Levels = tuple[np.ndarray, np.ndarray, np.ndarray]


def _ordered_levels(
    ucode: np.ndarray, t: np.ndarray, masks: np.ndarray, nsteps: int, window: int, strict: bool
) -> Levels:
    """``(level per user, seconds to convert per user x step, first step-1 row per user)``."""
    n = len(t)
    n_users = int(ucode[-1]) + 1 if n else 0
    level = np.zeros(n_users, dtype=np.int64)
    conv = np.full((n_users, nsteps), np.nan)
    first_row = np.full(n_users, -1, dtype=np.int64)
    if n == 0:
        return level, conv, first_row
    pos = np.arange(n, dtype=np.int64)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (ucode[1:] != ucode[:-1]) | (t[1:] != t[:-1])
    group = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    group_end = np.append(group_start[1:] - 1, n - 1)
    # As-of reference row: the last row of the tie group (<=) or the row before it (<).
    ref_row = group_start[group] - 1 if strict else group_end[group]

    valid = (masks & 1) != 0
    start = t
    hit = np.flatnonzero(valid)
    users, first = np.unique(ucode[hit], return_index=True)
    level[users] = 1
    first_row[users] = hit[first]
    for k in range(1, nsteps):
        if hit.size == 0:
            break
        last_valid = np.where(valid, pos, -1)
        np.maximum.accumulate(last_valid, out=last_valid)
        cand = np.flatnonzero((masks >> k) & 1)
        ref = ref_row[cand]
        src = np.where(ref >= 0, last_valid[np.maximum(ref, 0)], -1)
        ok = src >= 0
        src0 = np.maximum(src, 0)
        ok &= ucode[src0] == ucode[cand]
        ok &= t[cand] <= start[src0] + window
        hit, src = cand[ok], src0[ok]
        valid = np.zeros(n, dtype=bool)
        valid[hit] = True
        new_start = np.zeros(n, dtype=np.int64)
        new_start[hit] = start[src]
        start = new_start
        users, first = np.unique(ucode[hit], return_index=True)
        level[users] = k + 1
        conv[users, k] = (t[hit[first]] - t[src[first]]) / 1e6
    return level, conv, first_row


def _per_user_levels(
    ucode: np.ndarray, t: np.ndarray, masks: np.ndarray, nsteps: int, window: int, fn: Any
) -> Levels:
    n = len(t)
    n_users = int(ucode[-1]) + 1 if n else 0
    level = np.zeros(n_users, dtype=np.int64)
    conv = np.full((n_users, nsteps), np.nan)
    first_row = np.full(n_users, -1, dtype=np.int64)
    if n == 0:
        return level, conv, first_row
    bounds = np.append(np.flatnonzero(np.diff(ucode)) + 1, n)
    t_list, m_list = t.tolist(), masks.tolist()
    lo = 0
    for u, hi in enumerate(bounds.tolist()):
        lvl, times = fn(t_list[lo:hi], m_list[lo:hi], nsteps, window)
        level[u] = lvl
        for k, seconds in times.items():
            conv[u, k] = seconds
        if lvl:
            # the first step-1 row (unordered: the first row matching any step)
            bit = 1 if fn is _strict_order_user else -1
            first_row[u] = lo + next(i for i, m in enumerate(m_list[lo:hi]) if m & bit)
        lo = hi
    return level, conv, first_row


def _strict_order_user(
    ts: list[int], ms: list[int], nsteps: int, window: int
) -> tuple[int, dict[int, float]]:
    """ClickHouse windowFunnel 'strict_order' for one user's rows (sorted by time)."""
    entries: list[tuple[int, int]] = []
    for t, m in zip(ts, ms, strict=True):
        if m:
            entries.extend((t, k + 1) for k in range(nsteps) if m >> k & 1)
        else:
            entries.append((t, 0))
    entries.sort()  # ClickHouse order: time, then step index (non-step events first)
    chain: list[tuple[int, int] | None] = [None] * nsteps
    times: dict[int, float] = {}
    started = False
    for t, idx in entries:
        e = idx - 1
        if e == -1:
            if started:
                break
            continue
        if e == 0:
            chain[0] = (t, t)
            started = True
            continue
        prev = chain[e - 1]
        if started and prev is None:
            break
        if prev is not None and t <= prev[0] + window:
            if chain[e] is None:
                times[e] = (t - prev[1]) / 1e6
            chain[e] = (prev[0], t)
            if e + 1 == nsteps:
                break
    lvl = max((k + 1 for k in range(nsteps) if chain[k] is not None), default=0)
    return lvl, times


def _unordered_user(
    ts: list[int], ms: list[int], nsteps: int, window: int
) -> tuple[int, dict[int, float]]:
    """Most distinct steps within one window starting at any step event."""
    entries = [(t, k) for t, m in zip(ts, ms, strict=True) for k in range(nsteps) if m >> k & 1]
    best, best_firsts = 0, []
    j = 0
    for i, (t0, _) in enumerate(entries):
        if i and entries[i - 1][0] == t0:
            continue
        firsts: dict[int, int] = {}
        j = i
        while j < len(entries) and entries[j][0] <= t0 + window:
            firsts.setdefault(entries[j][1], entries[j][0])
            j += 1
        if len(firsts) > best:
            best, best_firsts = len(firsts), sorted(firsts.values())
            if best == nsteps:
                break
    times = {k: (best_firsts[k] - best_firsts[k - 1]) / 1e6 for k in range(1, best)}
    return best, times


def _step_stats(names: list[str], level: np.ndarray, conv: np.ndarray) -> list[dict[str, Any]]:
    counts = [int(np.count_nonzero(level >= k + 1)) for k in range(len(names))]
    steps = []
    for k, name in enumerate(names):
        count = counts[k]
        prev = counts[k - 1] if k else count
        times = conv[level >= k + 1, k] if k else np.empty(0)
        times = times[~np.isnan(times)]
        steps.append(
            {
                "name": name,
                "count": count,
                "conversion_rate": rate(count, counts[0]),
                "step_conversion_rate": rate(count, prev),
                "drop_off": prev - count,
                "drop_off_rate": rate(prev - count, prev),
                "median_time_to_convert_seconds": float(np.median(times)) if times.size else None,
                "avg_time_to_convert_seconds": float(np.mean(times)) if times.size else None,
            }
        )
    return steps


def _breakdowns(
    column: pa.ChunkedArray,
    first_row: np.ndarray,
    users: np.ndarray,
    level: np.ndarray,
    conv: np.ndarray,
    names: list[str],
    limit: int,
) -> list[dict[str, Any]]:
    values = column.take(pa.array(first_row[users])).to_pylist() if users.size else []
    counts = Counter(values)
    ranked = sorted(counts, key=lambda v: (-counts[v], v is None, str(v)))
    top = ranked[:limit]
    members: dict[Any, list[int]] = {}
    kept = set(top)
    for user, value in zip(users.tolist(), values, strict=True):
        members.setdefault(value if value in kept else OTHER, []).append(user)
    out = []
    for value in [*top, *([OTHER] if len(ranked) > limit else [])]:
        sel = np.array(members.get(value, []), dtype=np.int64)
        out.append({"value": value, "steps": _step_stats(names, level[sel], conv[sel])})
    return out


def _trend(
    t: np.ndarray,
    first_row: np.ndarray,
    users: np.ndarray,
    level: np.ndarray,
    nsteps: int,
    interval: str,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
) -> list[dict[str, Any]]:
    first_t = t[first_row[users]]
    buckets = bucket_array(local_us_array(first_t, tz, start, end), interval)
    lo = bucket_of(start, tz, interval)
    hi = bucket_of(end - timedelta(microseconds=1), tz, interval)
    entered = np.bincount(buckets - lo, minlength=hi - lo + 1)
    converted = np.bincount(buckets[level[users] >= nsteps] - lo, minlength=hi - lo + 1)
    return [
        {
            "period_start": bucket_label(lo + i, interval),
            "entered": int(entered[i]),
            "converted": int(converted[i]),
            "conversion_rate": rate(converted[i], entered[i]),
        }
        for i in range(hi - lo + 1)
    ]
