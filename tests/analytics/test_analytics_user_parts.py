"""Per-user passes split over threads (:func:`avila.analytics.user_order.parallel_parts`):
funnels in every mode, sessions and the overview give the same answers split into several
user ranges as in one pass, on random data with ties, duplicates and client session ids."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from analytics_data import PROJECT, T0, random_events

from avila.analytics import funnel, funnel_dropped, overview, sessions, user_order
from avila.analytics.user_order import user_parts

STEPS = [
    {"condition_type": "page_view", "condition_value": ""},
    {"condition_type": "product_view", "condition_value": ""},
    {"condition_type": "add_to_cart", "condition_value": ""},
    {"condition_type": "purchase", "condition_value": ""},
]
RANGE = {"start_time": T0.isoformat(), "end_time": (T0 + timedelta(days=3)).isoformat()}


def test_user_parts_cover_the_rows_and_never_split_a_user() -> None:
    codes = np.array([0, 0, 0, 1, 2, 2, 2, 2, 3, 4, 4])
    for parts in range(1, 14):
        ranges = user_parts(codes, parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(codes)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        assert all(lo == 0 or codes[lo] != codes[lo - 1] for lo, _ in ranges)
        assert len(ranges) <= parts
    assert user_parts(np.array([7, 7, 7, 7]), 3) == [(0, 4)]  # one user: one range
    assert user_parts(np.zeros(0, dtype=np.int64), 2) == []


def _answers(store):
    out = {}
    for mode in ("ordered", "strict_increase", "strict_order", "unordered"):
        out[mode] = funnel(
            store,
            PROJECT,
            {**RANGE, "steps": STEPS, "mode": mode, "conversion_window_seconds": 3600,
             "breakdown": "country", "trend": "day"},
        )  # fmt: skip
    out["sessions"] = sessions(store, PROJECT, RANGE)
    out["overview"] = overview(store, PROJECT, RANGE)
    return out


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_split_answers_equal_one_pass(load, monkeypatch, parts: int) -> None:
    store = load(random_events(5, n_users=150, with_sessions=True))
    monkeypatch.setattr(user_order, "PARALLEL_MIN_ROWS", 10**12)
    serial = _answers(store)
    monkeypatch.setattr(user_order, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(user_order, "PARALLEL_PARTS", parts)
    split = _answers(store)
    for key, expected in serial.items():
        assert _rounded(split[key]) == _rounded(expected), key
    assert serial["ordered"]["steps"][0]["count"] > 50  # the data reaches the funnel


def _rounded(value):
    """Averages summed in another order may differ in the last bits."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


@pytest.mark.parametrize("chunk_rows", [50, 333])
def test_answers_read_in_slices_of_users_equal_one_pull(load, monkeypatch, chunk_rows: int) -> None:
    """A long range is pulled in slices of the user hash (``CHUNK_ROWS``), one at a time, to
    bound the server's memory; sessions, the overview and the funnel report (every mode, with
    a breakdown and a trend) add the slices up."""
    store = load(random_events(9, n_users=150, with_sessions=True))
    queries = [
        RANGE,
        {**RANGE, "timezone": "America/New_York"},
        {**RANGE, "filters": [{"property": "country", "operator": "eq", "value": "DE"}]},
        {"start_time": RANGE["end_time"], "end_time": (T0 + timedelta(days=9)).isoformat()},
    ]

    def reports(q):  # noqa: ANN001, ANN202
        funnels = [
            funnel(
                store,
                PROJECT,
                {
                    **q,
                    "steps": STEPS,
                    "mode": mode,
                    "conversion_window_seconds": 3600,
                    "breakdown": "country",
                    "breakdown_limit": 3,
                    "trend": "day",
                },
            )  # fmt: skip
            for mode in ("ordered", "strict_increase", "strict_order", "unordered")
        ]
        dropped = [
            funnel_dropped(store, PROJECT, {**q, "steps": STEPS, "step": step, "limit": limit})
            for step, limit in ((1, 7), (2, 1000), (3, 1))
        ]
        return (sessions(store, PROJECT, q), overview(store, PROJECT, q), *funnels, *dropped)

    one_pull = [reports(q) for q in queries]
    slices: list[tuple[int, int | None]] = []
    original = user_order.rows_by_user

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if kwargs.get("key_range") is not None:
            slices.append(kwargs["key_range"])
        return original(*args, **kwargs)

    monkeypatch.setattr(user_order, "rows_by_user", counting)
    monkeypatch.setattr(user_order, "CHUNK_ROWS", chunk_rows)
    sliced = [reports(q) for q in queries]
    names = ("sessions", "overview", "funnel", "funnel strict_increase", "funnel strict_order",
             "funnel unordered", "dropped 1", "dropped 2", "dropped 3")  # fmt: skip
    for q, got, expected in zip(queries, sliced, one_pull, strict=True):
        for name, a, b in zip(names, got, expected, strict=True):
            assert a.keys() == b.keys()
            assert all(_same(a[k], b[k]) for k in a), (
                q,
                name,
                [k for k in a if not _same(a[k], b[k])],
            )
    assert len(slices) > len(queries)  # more than one slice per pull
    assert slices[0][0] == 0 and None in {hi for _, hi in slices}  # the whole hash space
    assert one_pull[0][0]["sessions"] > 100 and one_pull[0][1]["dau"]  # the data is there
    slices.clear()
    funnel(store, PROJECT, {**RANGE, "steps": STEPS})
    assert len(slices) > 1  # the funnel report too reads in slices
    slices.clear()
    funnel_dropped(store, PROJECT, {**RANGE, "steps": STEPS, "step": 1})
    assert len(slices) > 1  # and the users who dropped
    slices.clear()
    sessions(store, PROJECT, RANGE, raw=True)
    assert len(slices) > 1  # and the sessions report's raw read
    dropped = one_pull[0][-3]
    assert dropped["total"] > 7 and len(dropped["users"]) == 7  # the first 7 of them, by id
    steps = one_pull[0][2]["steps"]
    assert steps[0]["count"] > 50 and steps[1]["count"] > 0
    assert len(one_pull[0][2]["breakdowns"]) == 4  # the top 3 countries and "Other"


def _same(a, b) -> bool:  # noqa: ANN001
    """Equal, floats to 1e-12 relative (sums of the same terms in another order)."""
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_the_time_limit_holds_for_all_slices_of_a_pull(load, monkeypatch) -> None:
    """Each slice's query has ``AVILA_QUERY_TIMEOUT``; past it between slices, the whole
    report stops with the same 504 error instead of running the limit once per slice."""
    from avila.errors import QueryTimeout

    store = load(random_events(9, n_users=150, with_sessions=True))
    monkeypatch.setattr(user_order, "CHUNK_ROWS", 5)
    assert sessions(store, PROJECT, RANGE)["sessions"] > 100  # no limit: all slices read
    clock = iter(range(0, 10**6, 10))  # every look at the clock: 10 s later
    monkeypatch.setattr(user_order, "monotonic", lambda: next(clock))
    monkeypatch.setattr(store, "query_timeout", 25.0)
    with pytest.raises(QueryTimeout) as info:
        overview(store, PROJECT, RANGE, raw=True)  # (the slices of raw rows)
    assert info.value.details == [{"limit_seconds": 25.0}]
