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

The ordered modes are vectorised with numpy: after sorting candidate rows by (user, time) (the
report by a hash of the user id, see :mod:`avila.analytics.user_order`), the
latest valid step-(k-1) row at or before each step-k row (an "as-of" lookup via a running max of
row positions) carries the latest chain start, which is the best one for the window check.
``strict_order`` and ``unordered`` are vectorised too (see their functions), so every mode
costs a few passes over the rows per step, never a Python loop per user.
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
from avila.analytics.user_order import parallel_parts, rows_by_user
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
    table, (level, conv, first_row) = _user_levels(store, project_id, q, by_hash=True)
    start, end = time_range(q.start_time, q.end_time)
    tz = zone(q.timezone)
    nsteps = len(q.steps)
    t = _int64(table.column("t"))
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
        result["breakdowns"] = _breakdowns(
            table.column("b"), first_row, all_users, level, conv, names, q.breakdown_limit
        )
    if q.trend is not None:
        result["trend"] = _trend(t, first_row, all_users, level, nsteps, q.trend, tz, start, end)
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
    table, (level, _conv, _first_row) = _user_levels(store, project_id, q)
    dropped = np.flatnonzero(level == q.step)  # user codes, in user_id order
    ucode = user_codes(table.column("user_id"))
    user_row = np.flatnonzero(np.r_[True, ucode[1:] != ucode[:-1]]) if len(ucode) else ucode
    shown = user_row[dropped[: q.limit]]
    ids = table.column("user_id").take(pa.array(shown)).to_pylist() if shown.size else []
    return {
        "step": q.step,
        "users": [{"user_id": user_id} for user_id in ids],
        "total": int(dropped.size),
    }


def _check_steps(q: FunnelQuery) -> None:
    if len(q.steps) < MIN_STEPS:
        raise invalid("funnel_needs_two_steps", "steps", "a funnel needs at least 2 steps")
    if len(q.steps) > MAX_STEPS:
        raise invalid("funnel_too_many_steps", "steps", f"a funnel has at most {MAX_STEPS} steps")


def _user_levels(
    store: Store, project_id: str, q: FunnelQuery, *, by_hash: bool = False
) -> tuple[pa.Table, Levels]:
    """The candidate rows (sorted by user, time) and the per-user :data:`Levels` of ``q``.

    Shared by :func:`funnel` and :func:`funnel_dropped` so their numbers agree by construction.
    User codes number the distinct ``user_id`` values of the rows in order; ``by_hash`` sorts
    by a hash of the id instead (:mod:`avila.analytics.user_order`, no ``user_id`` column),
    for the report, which never names a user.
    """
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
    if by_hash:
        table, ucode = rows_by_user(store, sql, params, order, order)
    else:
        table = store.query_arrow(f"{sql} ORDER BY user_id, {order}", params)
        ucode = user_codes(table.column("user_id"))

    nsteps = len(q.steps)
    window_us = q.conversion_window_seconds * 1_000_000
    t = _int64(table.column("t"))
    masks = _int64(table.column("m"))

    def levels_of(lo: int, hi: int) -> tuple[int, Levels]:
        u = ucode[lo:hi] - (ucode[lo] if hi > lo else 0)
        part = (u, t[lo:hi], masks[lo:hi], nsteps, window_us)
        if q.mode in ("ordered", "strict_increase"):
            return lo, _ordered_levels(*part, strict=q.mode == "strict_increase")
        if q.mode == "strict_order":
            return lo, _strict_order_levels(*part)
        return lo, _unordered_levels(*part)

    return table, _joined(parallel_parts(ucode, levels_of))


def _joined(parts: list[tuple[int, Levels]]) -> Levels:
    """The levels of consecutive user ranges as one (``first_row`` back in whole-table rows)."""
    if len(parts) == 1 and parts[0][0] == 0:
        return parts[0][1]
    return (
        np.concatenate([levels[0] for _, levels in parts]),
        np.concatenate([levels[1] for _, levels in parts]),
        np.concatenate([np.where(levels[2] >= 0, levels[2] + lo, -1) for lo, levels in parts]),
    )


def _default_name(condition_type: str, value: str) -> str:
    return f"{condition_type} {value}".strip()


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_numpy(), dtype=np.int64)


Levels = tuple[np.ndarray, np.ndarray, np.ndarray]


def _sorted_unique(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_index=True)`` for non-decreasing ``codes`` (rows are sorted
    by user), without its sort."""
    if not len(codes):
        return codes, np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return codes[first], first


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
    # Row positions in 32 bits when they fit: these passes are bound by memory traffic.
    idx = np.int32 if n < np.iinfo(np.int32).max else np.int64
    pos = np.arange(n, dtype=idx)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (ucode[1:] != ucode[:-1]) | (t[1:] != t[:-1])
    group_start = np.flatnonzero(new_group).astype(idx)
    group_size = np.diff(np.append(group_start, n))
    # As-of reference row: the last row of the tie group (<=) or the row before it (<).
    if strict:
        ref_row = np.repeat(group_start - 1, group_size)
    else:
        ref_row = np.repeat(np.append(group_start[1:] - 1, n - 1).astype(idx), group_size)

    valid = (masks & 1) != 0
    start = t
    hit = np.flatnonzero(valid)
    users, first = _sorted_unique(ucode[hit])
    level[users] = 1
    first_row[users] = hit[first]
    for k in range(1, nsteps):
        if hit.size == 0:
            break
        last_valid = np.where(valid, pos, idx(-1))
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
        users, first = _sorted_unique(ucode[hit])
        level[users] = k + 1
        conv[users, k] = (t[hit[first]] - t[src[first]]) / 1e6
    return level, conv, first_row


def _empty_levels(n: int, ucode: np.ndarray, nsteps: int) -> Levels:
    n_users = int(ucode[-1]) + 1 if n else 0
    return (
        np.zeros(n_users, dtype=np.int64),
        np.full((n_users, nsteps), np.nan),
        np.full(n_users, -1, dtype=np.int64),
    )


def _unordered_levels(
    ucode: np.ndarray, t: np.ndarray, masks: np.ndarray, nsteps: int, window: int
) -> Levels:
    """``unordered``, vectorised: every (user, time) group starts a candidate window; per step,
    the step's first event at or after that time (a reverse running minimum of positions)
    counts when it is the same user's and within the window. The level is the most steps of
    any window; times come from the user's earliest window with that many steps (the gaps
    between its steps' first times, sorted)."""
    n = len(t)
    level, conv, first_row = _empty_levels(n, ucode, nsteps)
    if n == 0:
        return level, conv, first_row
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (ucode[1:] != ucode[:-1]) | (t[1:] != t[:-1])
    starts = np.flatnonzero(new_group)
    s_user, s_t = ucode[starts], t[starts]
    count = np.zeros(len(starts), dtype=np.int64)
    never = np.iinfo(np.int64).max
    firsts = np.full((len(starts), nsteps), never, dtype=np.int64)
    for k in range(nsteps):
        nxt = np.where((masks >> k) & 1 != 0, np.arange(n, dtype=np.int64), n)
        nxt = np.minimum.accumulate(nxt[::-1])[::-1][starts]
        p = np.minimum(nxt, n - 1)
        ok = (nxt < n) & (ucode[p] == s_user) & (t[p] <= s_t + window)
        count += ok
        firsts[ok, k] = t[p[ok]]
    np.maximum.at(level, s_user, count)
    best = np.flatnonzero(count == level[s_user])
    users, first = _sorted_unique(s_user[best])
    chosen = np.sort(firsts[best[first]], axis=1)
    gaps = (chosen[:, 1:] - chosen[:, :-1]) / 1e6
    reached = np.arange(1, nsteps)[None, :] < level[users][:, None]
    conv[users, 1:] = np.where(reached, gaps, np.nan)
    user_start = np.flatnonzero(np.r_[True, ucode[1:] != ucode[:-1]])
    first_row[ucode[user_start]] = user_start  # the first row matching any step
    return level, conv, first_row


def _strict_order_levels(
    ucode: np.ndarray, t: np.ndarray, masks: np.ndarray, nsteps: int, window: int
) -> Levels:
    """ClickHouse ``windowFunnel(...)('strict_order')``, vectorised.

    The rows become entries, one per matched step (a row matching no step is one entry of
    "step 0"), in ClickHouse's order: user, time, step index. An entry's validity depends only
    on the entries before it, so it is computed for all entries as in the ordered mode (the
    latest valid step-(k-1) entry strictly before it carries the chain start). A user's
    evaluation ends at the first entry after their first step-1 entry that matches no step, or
    matches step k+1 while no step-k entry has been reached yet; entries from there on do
    not count."""
    n = len(t)
    level, conv, first_row = _empty_levels(n, ucode, nsteps)
    if n == 0:
        return level, conv, first_row
    bits = [((masks >> k) & 1).astype(bool) for k in range(nsteps)]
    per_row = np.maximum(np.sum(bits, axis=0), 1)
    row_of = np.repeat(np.arange(n, dtype=np.int64), per_row)
    # Step index per entry (0 = no step), in increasing order within a row.
    offset = np.arange(len(row_of), dtype=np.int64) - np.repeat(
        np.cumsum(per_row) - per_row, per_row
    )
    step_lists = np.zeros((n, nsteps), dtype=np.int64)
    rank = np.zeros(n, dtype=np.int64)
    for k in range(nsteps):
        step_lists[bits[k], rank[bits[k]]] = k + 1
        rank += bits[k]
    idx = step_lists[row_of, np.minimum(offset, nsteps - 1)]
    # Rows are sorted by (user, time); entries of equal time must be in step order.
    e_user, e_t = ucode[row_of], t[row_of]
    order = np.lexsort((idx, e_t, e_user))
    row_of, idx, e_user, e_t = row_of[order], idx[order], e_user[order], e_t[order]
    m = len(idx)
    pos = np.arange(m, dtype=np.int64)

    valid = [np.zeros(m, dtype=bool) for _ in range(nsteps)]
    source = [np.full(m, -1, dtype=np.int64) for _ in range(nsteps)]
    start = np.where(idx == 1, e_t, 0)
    valid[0] = idx == 1
    breaks = np.zeros(m, dtype=bool)
    for k in range(1, nsteps):
        last = np.where(valid[k - 1], pos, -1)
        np.maximum.accumulate(last, out=last)
        prev = np.r_[-1, last[:-1]]  # latest valid step-k entry strictly before
        mine = idx == k + 1
        p0 = np.maximum(prev, 0)
        has_prev = (prev >= 0) & (e_user[p0] == e_user)
        breaks |= mine & ~has_prev
        ok = mine & has_prev & (e_t <= start[p0] + window)
        valid[k] = ok
        source[k] = np.where(ok, p0, -1)
        start = np.where(ok, start[p0], start)
    breaks |= idx == 0
    # A break only counts after the user's first step-1 entry.
    first_one = np.where(idx == 1, pos, m)
    user_start = np.flatnonzero(np.r_[True, e_user[1:] != e_user[:-1]])
    user_end = np.r_[user_start[1:], m]
    first_one_user = np.minimum.reduceat(first_one, user_start)
    breaks &= pos > np.repeat(first_one_user, user_end - user_start)
    cut_pos = np.where(breaks, pos, m)
    cut = np.repeat(np.minimum.reduceat(cut_pos, user_start), user_end - user_start)
    alive = pos < cut
    for k in range(nsteps):
        hit = np.flatnonzero(valid[k] & alive)
        users, first = _sorted_unique(e_user[hit])
        level[users] = k + 1
        if k:
            src = source[k][hit[first]]
            conv[users, k] = (e_t[hit[first]] - e_t[src]) / 1e6
    has_one = first_one_user < m
    first_row[e_user[user_start[has_one]]] = row_of[first_one_user[has_one]]
    return level, conv, first_row


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
