"""The vectorised strict_order levels against a per-user replay, on rows full of ties.

Rows come sorted by (user, time, mask), as the funnel's candidate rows do. When no row matches
two steps the levels take the rows as entries without expanding or sorting them
(:func:`avila.analytics.funnel_levels._entries`); with overlapping steps they expand and sort.
Both must give what a plain replay of ClickHouse's strict_order gives (the semantics of
:mod:`avila.analytics.funnels`), including rows at equal times that match no step.
"""

from __future__ import annotations

import numpy as np
import pytest
from analytics_oracles import strict_order_replay

from avila.analytics.funnel_levels import _entries, _expanded_entries, strict_order_levels

NSTEPS = 4
WINDOW = 5


def _rows(seed: int, overlapping: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, time, mask) sorted by all three: few distinct times, so many ties."""
    rng = np.random.default_rng(seed)
    n = 3000
    users = rng.integers(0, 200, n)
    times = rng.integers(0, 12, n)
    if overlapping:
        masks = rng.integers(0, 1 << NSTEPS, n)
    else:  # no step (0) or exactly one
        masks = np.where(rng.random(n) < 0.3, 0, 1 << rng.integers(0, NSTEPS, n))
    order = np.lexsort((masks, times, users))
    users, times, masks = users[order], times[order], masks[order]
    _, ucode = np.unique(users, return_inverse=True)
    return ucode.astype(np.int64), times.astype(np.int64), masks.astype(np.int64)


def _replay(times: list[int], masks: list[int]) -> tuple[int, dict[int, float]]:
    """One user's level and seconds to convert: the oracle's strict_order replay of the rows'
    entries (a row per step it matches; a row matching none is one entry of step 0)."""
    seq = [
        (t, k + 1) for t, m in zip(times, masks, strict=True) for k in range(NSTEPS) if m >> k & 1
    ]
    seq += [(t, 0) for t, m in zip(times, masks, strict=True) if m == 0]
    level, gaps = strict_order_replay(seq, NSTEPS, WINDOW)
    return level, {k: gap / 1e6 for k, gap in gaps.items()}


@pytest.mark.parametrize("overlapping", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_strict_order_levels_equal_a_replay(seed: int, overlapping: bool) -> None:
    ucode, t, masks = _rows(seed, overlapping)
    level, conv, _ = strict_order_levels(ucode, t, masks, NSTEPS, WINDOW)
    for user in range(int(ucode[-1]) + 1):
        mine = ucode == user
        want_level, want_seconds = _replay(t[mine].tolist(), masks[mine].tolist())
        assert level[user] == want_level, user
        for k in range(1, NSTEPS):
            got = conv[user, k]
            assert (np.isnan(got) and k not in want_seconds) or got == want_seconds[k], (user, k)


@pytest.mark.parametrize("seed", [4, 5])
def test_one_step_rows_are_their_own_entries(seed: int) -> None:
    """Without overlapping steps the rows, as they come, are the expanded and sorted entries."""
    ucode, t, masks = _rows(seed, overlapping=False)
    fast_rows, fast_idx = _entries(t, masks, NSTEPS, ucode)
    rows, idx = _expanded_entries(t, masks, NSTEPS, ucode)
    assert fast_rows is None  # entry i is row i
    # Entries of equal (user, time, step) may come in either order: compare what they hold.
    assert np.array_equal(fast_idx, idx)
    assert np.array_equal(t, t[rows]) and np.array_equal(ucode, ucode[rows])
