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
  ends the user's evaluation.
* ``unordered`` — the level is the largest number of distinct steps done within one window that
  starts at any step event.

Time to convert to step k (seconds): for each user who reached k, the time between the first
event that completed step k and the latest step-(k-1) completion the chain extended from
(unordered: the gap between the (k-1)-th and k-th distinct steps of the user's first best
window). Median and mean are over those users.

``breakdown`` groups users by the property's value on their first step-1 event in range; the
``breakdown_limit`` most frequent values are kept and the rest are reported as ``"Other"``.
``trend`` buckets users by the day/week (in ``timezone``) of that first step-1 event.
``total_users`` is the number of users who entered the funnel (did step 1).

:func:`funnel_dropped` lists the users whose level is exactly a step k < the number of steps
(reached k, not k+1) from the same per-user levels, so its ``total`` is the report's
``drop_off`` at step k+1 in every mode.

The report reads a long range's candidate rows in slices of whole users (ranges of a hash of
the user id, :mod:`avila.analytics.user_order`) and keeps only per-user figures between them,
so its memory is bounded by a slice, not by the range.

The ordered modes are vectorised with numpy: after sorting candidate rows by (user, time) (the
report by a hash of the user id), the
latest valid step-(k-1) row at or before each step-k row (an "as-of" lookup via a running max of
row positions) carries the latest chain start, which is the best one for the window check.
``strict_order`` and ``unordered`` are vectorised too (see their functions), so every mode
costs a few passes over the rows per step, never a Python loop per user.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avila.analytics.calendar import (
    bucket_array,
    bucket_label,
    bucket_of,
    local_us_array,
)
from avila.analytics.common import (
    OTHER,
    REST,
    condition_expr,
    events_source,
    fragments,
    invalid,
    parse_query,
    property_expr,
    rate,
    rows_at_most,
    time_range,
    where_clause,
    zone,
)
from avila.analytics.funnel_levels import (
    Levels,
    joined,
    ordered_levels,
    strict_order_levels,
    unordered_levels,
)
from avila.analytics.user_order import parallel_parts, rows_by_user_chunks
from avila.schemas.analytics import EventCondition, FunnelDroppedQuery, FunnelQuery
from avila.storage.base import Store

MIN_STEPS = 2
MAX_STEPS = 20


def funnel(store: Store, project_id: str, query: FunnelQuery | Mapping[str, Any]) -> dict[str, Any]:
    """Funnel report for ``project_id`` (see the module docstring for the semantics).

    Returns ``{"funnel_name", "steps": [...], "overall_conversion_rate", "total_users", "mode",
    "conversion_window_seconds"}`` plus ``"breakdowns"`` / ``"trend"`` when asked for.
    """
    q = parse_query(FunnelQuery, query)
    # Per user, over slices of whole users: levels, conversion times, and the time and
    # breakdown value of the user's first row (the trend and breakdown need no more).
    levels: list[np.ndarray] = []
    convs: list[np.ndarray] = []
    first_ts: list[np.ndarray] = []
    first_bs: list[pa.Array] = []
    for table, t, (part_level, part_conv, part_first) in _report_slices(store, project_id, q):
        levels.append(part_level)
        convs.append(part_conv)
        rows = np.maximum(part_first, 0)  # -1: never entered (not read below)
        first_ts.append(t[rows] if len(t) else rows)
        if q.breakdown:
            first_bs.append(table.column("b").combine_chunks().take(pa.array(rows)))
    level = np.concatenate(levels)
    conv = np.concatenate(convs)
    first_t = np.concatenate(first_ts)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    nsteps = len(q.steps)
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
    if q.breakdown:
        result["breakdown"] = q.breakdown
        first_b = _one_type(first_bs)
        result["breakdowns"] = _breakdowns(
            first_b, all_users, level, conv, names, q.breakdown_limit
        )
    if q.trend is not None:
        result["trend"] = _trend(first_t, all_users, level, nsteps, q.trend, tz, start, end)
    return result


def funnel_dropped(
    store: Store, project_id: str, query: FunnelDroppedQuery | Mapping[str, Any]
) -> dict[str, Any]:
    """Users who reached step ``query.step`` (1-based) of the funnel and not the next one.

    Returns ``{"step", "users": [{"user_id"}...], "total"}``: ``total`` is the funnel report's
    step-``step`` count minus its step-``step + 1`` count (both come from the same per-user
    levels); ``users`` is the first ``limit`` of them by ``user_id``. The last step is refused:
    users there completed the funnel rather than dropped.
    """
    q = parse_query(FunnelDroppedQuery, query)
    _check_steps(q)
    if q.step >= len(q.steps):
        raise invalid(
            "funnel_step_out_of_range",
            "step",
            f"step must be between 1 and {len(q.steps) - 1} (the last step before the end);"
            f" users at step {len(q.steps)} completed the funnel",
        )
    total = 0
    first_ids: list[pa.Array] = []  # per slice, its first ``limit`` dropped users by id
    for table, _t, (level, _conv, first_row) in _report_slices(store, project_id, q, with_ids=True):
        dropped = np.flatnonzero(level == q.step)  # user numbers of the slice
        total += int(dropped.size)
        if dropped.size:
            ids = table.column("user_id").combine_chunks().take(pa.array(first_row[dropped]))
            first_ids.append(ids.take(pc.sort_indices(ids)[: q.limit]))
    ids = pa.concat_arrays(first_ids) if first_ids else pa.array([], pa.string())
    shown = ids.take(pc.sort_indices(ids)[: q.limit]).to_pylist() if len(ids) else []
    return {
        "step": q.step,
        "users": [{"user_id": user_id} for user_id in shown],
        "total": total,
    }


def _check_steps(q: FunnelQuery) -> None:
    if len(q.steps) < MIN_STEPS:
        raise invalid("funnel_needs_two_steps", "steps", "a funnel needs at least 2 steps")
    if len(q.steps) > MAX_STEPS:
        raise invalid("funnel_too_many_steps", "steps", f"a funnel has at most {MAX_STEPS} steps")


def _report_slices(
    store: Store, project_id: str, q: FunnelQuery, *, with_ids: bool = False
) -> Iterator[tuple[pa.Table, np.ndarray, Levels]]:
    """The candidate rows, their times (epoch µs) and their per-user :data:`Levels`, in
    slices of whole users (by a hash of the id,
    :func:`avila.analytics.user_order.rows_by_user_chunks`): a long range of a busy project
    is never in memory at once. Each slice numbers its users from 0; its rows have a
    ``user_id`` column when ``with_ids``. :func:`funnel` and :func:`funnel_dropped` read the
    same rows and levels, so their numbers agree by construction."""
    sql, params, order = _candidate_rows(store, project_id, q)
    columns = f"user_id, {order}" if with_ids else order
    # The range's events bound the candidate rows from above (a count without the step
    # conditions costs a fraction of one with them: 0.05 s against 0.8 s for 25 M events).
    start, end = time_range(q.start_time, q.end_time)
    rows = rows_at_most(store, project_id, start, end, q.filters)
    for table, ucode in rows_by_user_chunks(store, sql, params, columns, order, rows=rows):
        if len(ucode) and ucode[0]:
            ucode = ucode - ucode[0]
        t = _int64(table.column("t"))
        yield table, t, _levels(q, t, table, ucode)


def _candidate_rows(store: Store, project_id: str, q: FunnelQuery) -> tuple[str, list[Any], str]:
    """The SQL of the rows that can move a user along the funnel (``user_id``, ``t`` epoch
    µs, ``m`` the mask of steps the row matches, ``b`` the breakdown value when asked for),
    its parameters, and the order of a user's rows."""
    _check_steps(q)
    start, end = time_range(q.start_time, q.end_time)
    zone(q.timezone)  # validated here so every caller refuses a bad zone alike
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
    if q.mode == "strict_order":
        # Of the events matching no step only one per user can matter: the first one after
        # the user's first step-1 event (it ends the evaluation; one at the same time sorts
        # before the step and does not). So the store returns the step rows and that row.
        empty_b = ", NULL AS b" if breakdown is not None else ""
        sql = (
            f"WITH e AS ({sql}), s AS (SELECT user_id, min(t) AS t1 FROM e WHERE m % 2 = 1"
            " GROUP BY user_id) SELECT * FROM e WHERE m <> 0 UNION ALL SELECT e.user_id,"
            f" min(e.t) AS t, 0 AS m{empty_b} FROM e JOIN s ON e.user_id = s.user_id"
            " WHERE e.m = 0 AND e.t > s.t1 GROUP BY e.user_id"
        )
        # ORDER BY after a UNION sorts only its last SELECT in ClickHouse: sort the whole.
        sql = f"SELECT * FROM ({sql}) AS u"
    else:
        sql += " AND (" + " OR ".join(c.sql for c in conds) + ")"
        params.extend(p for c in conds for p in c.params)
    # Ties broken by step mask and breakdown value, so the user's "first" row (breakdown,
    # unordered) is the same on every run and backend.
    order = "t, m" + (", b" if breakdown is not None else "")
    return sql, params, order


def _levels(q: FunnelQuery, t: np.ndarray, table: pa.Table, ucode: np.ndarray) -> Levels:
    """Per-user levels of the rows of :func:`_candidate_rows` (``t`` their times) sorted by
    user (0-based user numbers ``ucode``) and time, in threads over ranges of whole users."""
    nsteps = len(q.steps)
    window_us = q.conversion_window_seconds * 1_000_000
    masks = _int64(table.column("m"))

    def levels_of(lo: int, hi: int) -> tuple[int, Levels]:
        u = ucode[lo:hi] - (ucode[lo] if hi > lo else 0)
        part = (u, t[lo:hi], masks[lo:hi], nsteps, window_us)
        if q.mode in ("ordered", "strict_increase"):
            return lo, ordered_levels(*part, strict=q.mode == "strict_increase")
        if q.mode == "strict_order":
            return lo, strict_order_levels(*part)
        return lo, unordered_levels(*part)

    return joined(parallel_parts(ucode, levels_of))


def _default_name(condition_type: str, value: str) -> str:
    return f"{condition_type} {value}".strip()


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_numpy(), dtype=np.int64)


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


def _one_type(parts: list[pa.Array]) -> pa.ChunkedArray:
    """The slices' breakdown values as one column (a slice whose values are all missing may
    come back typed null)."""
    kind = next((a.type for a in parts if a.type != pa.null()), pa.null())
    return pa.chunked_array([a if a.type == kind else a.cast(kind) for a in parts], type=kind)


def _breakdowns(
    first_b: pa.ChunkedArray,
    users: np.ndarray,
    level: np.ndarray,
    conv: np.ndarray,
    names: list[str],
    limit: int,
) -> list[dict[str, Any]]:
    """Step figures per breakdown value (of each user's first row: ``first_b`` per user)."""
    values = first_b.take(pa.array(users)).to_pylist() if users.size else []
    counts = Counter(values)
    ranked = sorted(counts, key=lambda v: (-counts[v], v is None, str(v)))
    top = ranked[:limit]
    members: dict[Any, list[int]] = {}
    kept = set(top)
    for user, value in zip(users.tolist(), values, strict=True):
        members.setdefault(value if value in kept else REST, []).append(user)
    out = []
    for value in [*top, *([REST] if len(ranked) > limit else [])]:
        sel = np.array(members.get(value, []), dtype=np.int64)
        label = OTHER if value is REST else value
        out.append({"value": label, "steps": _step_stats(names, level[sel], conv[sel])})
    return out


def _trend(
    first_t: np.ndarray,
    users: np.ndarray,
    level: np.ndarray,
    nsteps: int,
    interval: str,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
) -> list[dict[str, Any]]:
    buckets = bucket_array(local_us_array(first_t[users], tz, start, end), interval)
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
