"""Lifecycle and stickiness on the engine: exact against pandas on generated data in several
time zones (two with a DST change inside the range), plus hand-checked cases."""

from __future__ import annotations

import copy
import importlib
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from analytics_data import PROJECT, event, to_table
from journey_oracles import journey_rows, lifecycle_oracle, stickiness_oracle

from avila.analytics import lifecycle, stickiness
from avila.errors import ValidationFailed

# The module, not the function avila.analytics re-exports under the same name.
lifecycle_module = importlib.import_module("avila.analytics.lifecycle")

T0 = datetime(2024, 2, 20)
ROWS = journey_rows(seed=8, n_users=80, t0=T0, days=60)
# Covers the US (2024-03-10) and EU (2024-03-31) DST starts; ends and starts mid-week/month.
START, END = datetime(2024, 3, 5, 12), datetime(2024, 4, 10, 6)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
HOME = {"condition_type": "page_view", "condition_value": "/"}
PAGES = {"condition_type": "page_view", "condition_value": ""}


#: Oracle answers by (oracle, its arguments after ROWS): every backend's test of one case asks
#: the pure oracle the same question about the same ROWS; it is computed once, each test
#: compares against its own copy.
_WANT: dict[tuple[Any, ...], Any] = {}


def want_of(oracle, start, end, period, tz, cond=None):
    key = (oracle.__name__, start, end, period, tz, json.dumps(cond, sort_keys=True))
    if key not in _WANT:
        _WANT[key] = oracle(ROWS, start, end, period, tz, cond)
    return copy.deepcopy(_WANT[key])


@pytest.fixture(scope="module")
def data_store(module_store):
    module_store.append_events(to_table(ROWS))
    return module_store


def lifecycle_table(result):
    return {
        p["period_start"]: {k: p[k] for k in ("new", "returning", "resurrecting", "dormant")}
        for p in result["periods"]
    }


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize("period", ["day", "week", "month"])
@pytest.mark.parametrize("cond", [None, PAGES, HOME])
def test_lifecycle_matches_pandas(data_store, tz, period, cond):
    body = {"period": period, "start_time": START, "end_time": END, "timezone": tz}
    if cond:
        body["event"] = cond
    got = lifecycle(data_store, PROJECT, body)
    assert lifecycle_table(got) == want_of(lifecycle_oracle, START, END, period, tz, cond)
    for p in got["periods"]:
        assert p["dormant"] <= 0
        assert p["active"] == p["new"] + p["returning"] + p["resurrecting"]
    assert sum(p["new"] + p["resurrecting"] + p["returning"] for p in got["periods"]) > 0


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize("period", ["week", "month"])
@pytest.mark.parametrize("cond", [None, HOME])
def test_stickiness_matches_pandas(data_store, tz, period, cond):
    body = {"period": period, "start_time": START, "end_time": END, "timezone": tz}
    if cond:
        body["event"] = cond
    got = stickiness(data_store, PROJECT, body)
    want = want_of(stickiness_oracle, START, END, period, tz, cond)
    assert {
        p["period_start"]: [r["users"] for r in p["distribution"]] for p in got["periods"]
    } == want
    total = [sum(col) for col in zip(*want.values(), strict=True)]
    assert [r["users"] for r in got["distribution"]] == total
    assert [r["active_days"] for r in got["distribution"]] == list(range(1, len(total) + 1))
    assert got["user_periods"] == sum(total) > 0


def test_hand_checked_lifecycle(load):
    d = datetime(2024, 3, 4)  # a Monday
    store = load(
        [
            event("old", d - timedelta(days=30)),  # seen long before, then week 2 and 3
            event("old", d + timedelta(days=8)),
            event("old", d + timedelta(days=15)),
            event("new", d + timedelta(days=1)),  # new in week 1, gone in week 2
            event("new", d + timedelta(days=1, hours=3)),
            event("back", d - timedelta(days=6)),  # active the week before week 1
            event("back", d + timedelta(days=2)),  # returning in week 1
            event("back", d + timedelta(days=16)),  # resurrecting in week 3
        ]
    )
    got = lifecycle(
        store,
        PROJECT,
        {"period": "week", "start_time": d, "end_time": d + timedelta(days=21)},
    )
    assert lifecycle_table(got) == {
        "2024-03-04": {"new": 1, "returning": 1, "resurrecting": 0, "dormant": 0},
        "2024-03-11": {"new": 0, "returning": 0, "resurrecting": 1, "dormant": -2},
        "2024-03-18": {"new": 0, "returning": 1, "resurrecting": 1, "dormant": 0},
    }


def test_berlin_dst_day_is_one_local_day(load):
    # 2024-03-31 has 23 hours in Berlin. 2024-03-30 23:30 UTC is already 03-31 00:30 local;
    # 2024-03-31 21:59 UTC is 23:59 local (CEST): one local day, two UTC days. 22:30 UTC is
    # 04-01 00:30 local, a Monday: the next ISO week.
    store = load(
        [
            event("a", datetime(2024, 3, 30, 23, 30)),
            event("a", datetime(2024, 3, 31, 21, 59)),
            event("a", datetime(2024, 3, 31, 22, 30)),
        ]
    )
    rng = {"start_time": "2024-03-25T00:00:00Z", "end_time": "2024-04-02T00:00:00Z"}
    berlin = stickiness(store, PROJECT, {**rng, "period": "week", "timezone": "Europe/Berlin"})
    assert [(p["period_start"], p["distribution"][0]["users"]) for p in berlin["periods"]] == [
        ("2024-03-25", 1),
        ("2024-04-01", 1),
    ]
    utc = stickiness(store, PROJECT, {**rng, "period": "week"})
    assert [
        (p["period_start"], [r["users"] for r in p["distribution"][:2]]) for p in utc["periods"]
    ] == [
        ("2024-03-25", [0, 1]),  # 03-30 and 03-31, in one UTC week
        ("2024-04-01", [0, 0]),
    ]


def test_empty_range(data_store):
    rng = {"start_time": "2031-01-01T00:00:00Z", "end_time": "2031-01-15T00:00:00Z"}
    got = lifecycle(data_store, PROJECT, {**rng, "period": "week"})
    assert len(got["periods"]) == 3  # weeks of 2030-12-30, 2031-01-06, 2031-01-13
    assert all(p[k] == 0 for p in got["periods"] for k in ("new", "returning", "dormant"))
    sticky = stickiness(data_store, PROJECT, {**rng, "period": "month"})
    assert sticky["user_periods"] == 0 and len(sticky["distribution"]) == 31


@pytest.mark.parametrize(
    ("fn", "body", "code", "path", "extra"),
    [
        (
            lifecycle,
            {"period": "year"},
            "invalid_query",
            "period",
            {"allowed": ["day", "month", "week"]},
        ),
        (stickiness, {"period": "day"}, "invalid_query", "period", {"allowed": ["month", "week"]}),
        (lifecycle, {"timezone": "Mars/Olympus"}, "unknown_timezone", "timezone", {}),
        (
            stickiness,
            {"event": {"condition_type": "nope"}},
            "unknown_condition_type",
            "event.condition_type",
            {},
        ),
        (
            lifecycle,
            {
                "period": "day",
                "start_time": "2020-01-01T00:00:00Z",
                "end_time": "2024-01-01T00:00:00Z",
            },
            "too_many_periods",
            "end_time",
            {},
        ),
    ],
)
def test_invalid_queries(module_store, fn, body, code, path, extra):
    # (the module's store: a query is refused before it reads anything, so no store of its own)
    with pytest.raises(ValidationFailed) as info:
        fn(module_store, PROJECT, body)
    detail = info.value.details[0]
    assert (info.value.code, detail["path"]) == (code, path)
    assert {k: detail[k] for k in extra} == extra


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("period", ["day", "week"])
@pytest.mark.parametrize("cond", [None, HOME])
def test_lifecycle_activity_query_matches_pandas(data_store, monkeypatch, tz, period, cond):
    """The query shape for many periods gives the same figures (forced here for few)."""
    monkeypatch.setattr(lifecycle_module, "BITSET_MAX_PERIODS", 0)
    body = {"period": period, "start_time": START, "end_time": END, "timezone": tz}
    if cond:
        body["event"] = cond
    got = lifecycle(data_store, PROJECT, body)
    assert lifecycle_table(got) == want_of(lifecycle_oracle, START, END, period, tz, cond)


def test_lifecycle_over_many_days_matches_pandas(data_store):
    start, end = datetime(2024, 2, 10), datetime(2024, 4, 28)  # 78 daily periods
    body = {"period": "day", "start_time": start, "end_time": end, "timezone": "Europe/Berlin"}
    got = lifecycle(data_store, PROJECT, body)
    assert len(got["periods"]) + 1 > lifecycle_module.BITSET_MAX_PERIODS
    assert lifecycle_table(got) == want_of(lifecycle_oracle, start, end, "day", "Europe/Berlin")
