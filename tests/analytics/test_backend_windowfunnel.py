"""Our funnels equal ClickHouse's own ``windowFunnel`` run directly in chdb on the same rows.

For each mode windowFunnel has (default = our ``ordered``, ``strict_increase``,
``strict_order``), the per-user level ``windowFunnel(window)(t, step1, ..., stepN)`` over the
range's rows, with the step conditions compiled by our own condition SQL, gives the step counts
(users with level >= k). Timestamps are microseconds since the epoch, so microsecond ties are
ties for both. ``unordered`` has no windowFunnel counterpart (our own oracle checks it).

One known divergence, pinned by its own test: in ``strict_increase``, when an event matches
step 1 *and* a later step, windowFunnel restarts the chain at that event and so loses the
chain an earlier step-1 event started (the later step then needs a time strictly after
itself); ours keeps the best chain, as the mode's definition says. Funnels whose steps
overlap are therefore compared in the other modes only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from analytics_data import PROJECT, T0, event, random_events, to_table

from avila.analytics import funnel
from avila.analytics.common import condition_expr, time_range
from avila.schemas.analytics import EventCondition
from avila.storage import Store
from avila.testing.backends import open_backend

ROWS = random_events(seed=23, n_users=120)
START, END = T0 - timedelta(days=1), T0 + timedelta(days=3)
FUNNELS = [
    [
        {"condition_type": "page_view", "condition_value": ""},
        {"condition_type": "product_view", "condition_value": ""},
        {"condition_type": "add_to_cart", "condition_value": ""},
        {"condition_type": "purchase", "condition_value": ""},
    ],
    [
        {"condition_type": "page_view", "condition_value": "/a", "match": "prefix"},
        {"condition_type": "page_view", "condition_value": "product", "match": "contains"},
        {"condition_type": "custom", "condition_value": "sign", "match": "prefix"},
    ],
    [  # overlapping steps: one event may match several
        {"condition_type": "page_view", "condition_value": ""},
        {"condition_type": "page_view", "condition_value": "^/a/?b?$", "match": "regex"},
        {"condition_type": "click", "condition_value": ""},
    ],
]
MODES = {"ordered": "", "strict_increase": "'strict_increase'", "strict_order": "'strict_order'"}


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = open_backend("chdb", tmp_path_factory.mktemp("windowfunnel"))
    store.append_events(to_table(ROWS))
    yield store
    store.close()


def _window_funnel_counts(
    store: Store, steps: list[dict[str, str]], window_s: int, mode: str, project: str = PROJECT
) -> list[int]:
    conds = [
        condition_expr(
            store,
            EventCondition(s["condition_type"], s["condition_value"], s.get("match", "exact")),
            f"steps[{i}]",
        )
        for i, s in enumerate(steps)
    ]
    start, end = time_range(START, END)
    modes = f", {MODES[mode]}" if MODES[mode] else ""
    sql = (
        # The window is a parametric argument: a literal (an int of this test), not a parameter.
        f"SELECT level, count() FROM (SELECT user_id, windowFunnel({int(window_s) * 1_000_000}"
        f"{modes})("
        "toUInt64(toUnixTimestamp64Micro(ts)), "
        + ", ".join(c.sql for c in conds)
        + ") AS level FROM events WHERE project_id = ? AND ts >= ? AND ts < ? GROUP BY user_id)"
        " GROUP BY level"
    )
    params = [*[p for c in conds for p in c.params], project, start, end]
    by_level = dict(store.query(sql, params))
    return [sum(n for level, n in by_level.items() if level >= k) for k in range(1, len(steps) + 1)]


CASES = [
    (steps, mode)
    for steps, name in zip(FUNNELS, ["shop", "pages", "overlapping"], strict=True)
    for mode in sorted(MODES)
    if not (name == "overlapping" and mode == "strict_increase")
]
IDS = [f"{i // 3}-{mode}" for i, (_, mode) in enumerate(CASES)]


@pytest.mark.parametrize("window", [1, 600, 3600, 86400])
@pytest.mark.parametrize(("steps", "mode"), CASES, ids=IDS)
def test_funnel_equals_window_funnel(
    chdb: Store, steps: list[dict[str, str]], mode: str, window: int
) -> None:
    got = funnel(
        chdb,
        PROJECT,
        {
            "steps": steps,
            "mode": mode,
            "conversion_window_seconds": window,
            "start_time": START.isoformat(),
            "end_time": END.isoformat(),
        },
    )
    expected = _window_funnel_counts(chdb, steps, window, mode)
    assert expected[0] > 0
    assert [s["count"] for s in got["steps"]] == expected


def test_strict_increase_divergence_when_a_step_one_event_matches_step_two(chdb: Store) -> None:
    """page_view / at t, page_view /a at t + 1 s (matches steps 1 and 2), click at t + 2 s:
    strictly increasing times 1 -> 2 -> 3, so level 3 by definition (ours); windowFunnel
    restarts the chain at the second event and reports level 1."""
    t = T0 + timedelta(hours=5)
    rows = [
        event("diverge", t, "page_view", project_id="diverge", url="/"),
        event("diverge", t + timedelta(seconds=1), "page_view", project_id="diverge", url="/a"),
        event("diverge", t + timedelta(seconds=2), "click", project_id="diverge", url="/x"),
    ]
    chdb.append_events(to_table(rows))
    steps = [
        {"condition_type": "page_view", "condition_value": ""},
        {"condition_type": "page_view", "condition_value": "/a"},
        {"condition_type": "click", "condition_value": ""},
    ]
    query = {"steps": steps, "mode": "strict_increase", "conversion_window_seconds": 60}
    query |= {"start_time": START.isoformat(), "end_time": END.isoformat()}
    ours = [s["count"] for s in funnel(chdb, "diverge", query)["steps"]]
    assert ours == [1, 1, 1]
    assert _window_funnel_counts(chdb, steps, 60, "strict_increase", "diverge") == [1, 0, 0]
