"""Per-user funnel levels over rows sorted by user and time, vectorised with numpy.

Each function takes the rows' user numbers (non-decreasing, 0-based), times (epoch µs) and
step bit masks, and returns :data:`Levels`: the level each user reached, the seconds to convert
to each step, and the user's first step-1 row. The semantics of each mode are in
:mod:`avila.analytics.funnels`; rows of different users never interact, so ranges of whole
users can be computed apart (in threads) and :func:`joined`.
"""

from __future__ import annotations

import numpy as np

Levels = tuple[np.ndarray, np.ndarray, np.ndarray]


def sorted_unique(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_index=True)`` for non-decreasing ``codes`` (rows are sorted
    by user), without its sort."""
    if not len(codes):
        return codes, np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return codes[first], first


def ordered_levels(
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
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (ucode[1:] != ucode[:-1]) | (t[1:] != t[:-1])
    group_start = np.flatnonzero(new_group).astype(idx)
    group_size = np.diff(np.append(group_start, n))
    # As-of reference row: the last row of the tie group (<=) or the row before it (<).
    if strict:
        ref_row = np.repeat(group_start - 1, group_size)
    else:
        ref_row = np.repeat(np.append(group_start[1:] - 1, n - 1).astype(idx), group_size)

    # One step bit per row in 32 bits (at most 20 steps), and the chain start of each row that
    # holds a valid step, updated in place: a step's rows read only the previous step's.
    bits = np.asarray(masks).astype(np.uint32)
    start = np.array(t, dtype=np.int64)
    hit = np.flatnonzero(bits & np.uint32(1))
    users, first = sorted_unique(ucode[hit])
    level[users] = 1
    first_row[users] = hit[first]
    for k in range(1, nsteps):
        if hit.size == 0:
            break
        last_valid = np.full(n, -1, dtype=idx)
        last_valid[hit] = hit
        np.maximum.accumulate(last_valid, out=last_valid)
        cand = np.flatnonzero(bits & np.uint32(1 << k))
        ref = ref_row[cand]
        src = np.where(ref >= 0, last_valid[np.maximum(ref, 0)], -1)
        ok = src >= 0
        src0 = np.maximum(src, 0)
        ok &= ucode[src0] == ucode[cand]
        ok &= t[cand] <= start[src0] + window
        hit, src = cand[ok], src0[ok]
        start[hit] = start[src]
        users, first = sorted_unique(ucode[hit])
        level[users] = k + 1
        conv[users, k] = (t[hit[first]] - t[src[first]]) / 1e6
    return level, conv, first_row


def empty_levels(n: int, ucode: np.ndarray, nsteps: int) -> Levels:
    n_users = int(ucode[-1]) + 1 if n else 0
    return (
        np.zeros(n_users, dtype=np.int64),
        np.full((n_users, nsteps), np.nan),
        np.full(n_users, -1, dtype=np.int64),
    )


def unordered_levels(
    ucode: np.ndarray, t: np.ndarray, masks: np.ndarray, nsteps: int, window: int
) -> Levels:
    """``unordered``, vectorised: every (user, time) group starts a candidate window; per step,
    the step's first event at or after that time (a reverse running minimum of positions)
    counts when it is the same user's and within the window. The level is the most steps of
    any window; times come from the user's earliest window with that many steps (the gaps
    between its steps' first times, sorted)."""
    n = len(t)
    level, conv, first_row = empty_levels(n, ucode, nsteps)
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
    users, first = sorted_unique(s_user[best])
    chosen = np.sort(firsts[best[first]], axis=1)
    gaps = (chosen[:, 1:] - chosen[:, :-1]) / 1e6
    reached = np.arange(1, nsteps)[None, :] < level[users][:, None]
    conv[users, 1:] = np.where(reached, gaps, np.nan)
    user_start = np.flatnonzero(np.r_[True, ucode[1:] != ucode[:-1]])
    first_row[ucode[user_start]] = user_start  # the first row matching any step
    return level, conv, first_row


def strict_order_levels(
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
    level, conv, first_row = empty_levels(n, ucode, nsteps)
    if n == 0:
        return level, conv, first_row
    row_of, idx = _entries(t, masks, nsteps, ucode)
    e_user, e_t = (ucode, t) if row_of is None else (ucode[row_of], t[row_of])
    m = len(idx)
    # Positions in 32 bits when they fit: these passes are bound by memory traffic.
    pos_type = np.int32 if m < np.iinfo(np.int32).max else np.int64
    # Per step, its valid entries' positions and (from step 2) the step-(k-1) entry each
    # extended; only a step's own entries are looked at, as in the ordered mode.
    hits = [np.flatnonzero(idx == 1)]
    sources = [hits[0]]
    start = np.where(idx == 1, e_t, 0)  # chain start, at valid entries
    broken = [np.flatnonzero(idx == 0)]  # entries that may end an evaluation
    for k in range(1, nsteps):
        last = np.full(m, -1, dtype=pos_type)
        last[hits[k - 1]] = hits[k - 1]
        np.maximum.accumulate(last, out=last)
        cand = np.flatnonzero(idx == k + 1)
        prev = np.where(cand > 0, last[np.maximum(cand - 1, 0)], -1)  # strictly before
        p0 = np.maximum(prev, 0)
        has_prev = (prev >= 0) & (e_user[p0] == e_user[cand])
        broken.append(cand[~has_prev])
        ok = has_prev & (e_t[cand] <= start[p0] + window)
        hits.append(cand[ok])
        sources.append(p0[ok])
        start[hits[k]] = start[sources[k]]
    # A user's evaluation ends at their first break after their first step-1 entry.
    n_users = len(level)
    with_one, first = sorted_unique(e_user[hits[0]])
    first_one = np.full(n_users, m, dtype=np.int64)
    first_one[with_one] = hits[0][first]
    breaks = np.sort(np.concatenate(broken))
    breaks = breaks[breaks > first_one[e_user[breaks]]]
    cut = np.full(n_users, m, dtype=np.int64)
    cut_users, cut_first = sorted_unique(e_user[breaks])
    cut[cut_users] = breaks[cut_first]
    for k in range(nsteps):
        alive = hits[k] < cut[e_user[hits[k]]]
        hit = hits[k][alive]
        users, first = sorted_unique(e_user[hit])
        level[users] = k + 1
        if k:
            src = sources[k][alive][first]
            conv[users, k] = (e_t[hit[first]] - e_t[src]) / 1e6
    first_entries = first_one[with_one]
    first_row[with_one] = first_entries if row_of is None else row_of[first_entries]
    return level, conv, first_row


def _entries(
    t: np.ndarray, masks: np.ndarray, nsteps: int, ucode: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """:func:`strict_order_levels`' entries: their rows and step indexes (0 = no step), in
    the order (user, time, step index). When no row matches two steps, the entries are the
    rows themselves, already in that order (rows come sorted by user, time and mask, and a
    one-step mask grows with its step): no expansion and no sort, and rows None (entry i is
    row i)."""
    if not np.any(masks & (masks - 1)):
        _, exponent = np.frexp(masks)  # 2^(k-1) -> k, 0 -> 0
        return None, exponent.astype(np.int64)
    return _expanded_entries(t, masks, nsteps, ucode)


def _expanded_entries(
    t: np.ndarray, masks: np.ndarray, nsteps: int, ucode: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_entries` for any masks: each row repeated once per step it matches, sorted."""
    bits = [((masks >> k) & 1).astype(bool) for k in range(nsteps)]
    per_row = np.maximum(np.sum(bits, axis=0), 1)
    row_of = np.repeat(np.arange(len(t), dtype=np.int64), per_row)
    # Step index per entry (0 = no step), in increasing order within a row.
    offset = np.arange(len(row_of), dtype=np.int64) - np.repeat(
        np.cumsum(per_row) - per_row, per_row
    )
    step_lists = np.zeros((len(t), nsteps), dtype=np.int64)
    rank = np.zeros(len(t), dtype=np.int64)
    for k in range(nsteps):
        step_lists[bits[k], rank[bits[k]]] = k + 1
        rank += bits[k]
    idx = step_lists[row_of, np.minimum(offset, nsteps - 1)]
    # Entries of rows at equal times must be in step order.
    order = np.lexsort((idx, t[row_of], ucode[row_of]))
    return row_of[order], idx[order]


def joined(parts: list[tuple[int, Levels]]) -> Levels:
    """The levels of consecutive user ranges as one (``first_row`` back in whole-table rows)."""
    if len(parts) == 1 and parts[0][0] == 0:
        return parts[0][1]
    return (
        np.concatenate([levels[0] for _, levels in parts]),
        np.concatenate([levels[1] for _, levels in parts]),
        np.concatenate([np.where(levels[2] >= 0, levels[2] + lo, -1) for lo, levels in parts]),
    )
