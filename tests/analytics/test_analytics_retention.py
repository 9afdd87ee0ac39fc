from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from analytics_data import PROJECT, event, random_events, to_table
from analytics_oracles import retention_oracle

from avila.analytics import retention
from avila.errors import ValidationFailed

# Spans Sao Paulo's historic DST start (2018-11-04 00:00 -> 01:00) and end (2019-02-17).
BASE = datetime(2018, 10, 20)
ROWS = [
    {**r, "ts": BASE + (r["ts"] - datetime(2024, 3, 1)) * 60}
    for r in random_events(seed=11, n_users=80, span=timedelta(days=2), grid=timedelta(minutes=7))
]
START, END = datetime(2018, 10, 25), datetime(2019, 1, 20)
CONDS = [
    None,
    {"condition_type": "page_view", "condition_value": ""},
    {"condition_type": "purchase", "condition_value": ""},
    {"condition_type": "page_view", "condition_value": "/a", "match": "prefix"},
]


@pytest.fixture(scope="module")
def data_store(module_store):
    module_store.append_events(to_table(ROWS))
    return module_store


@pytest.mark.parametrize("tz", ["UTC", "America/Sao_Paulo", "Europe/Berlin", "Asia/Kolkata"])
@pytest.mark.parametrize("period", ["day", "week", "month"])
@pytest.mark.parametrize("mode", ["exact", "on_or_after"])
def test_retention_matches_pandas_oracle(data_store, tz, period, mode):
    periods = {"day": 10, "week": 6, "month": 3}[period]
    for start_ev, ret_ev in [(CONDS[0], CONDS[0]), (CONDS[1], CONDS[2]), (CONDS[3], CONDS[1])]:
        body = {
            "period": period,
            "periods": periods,
            "start_time": START.isoformat(),
            "end_time": END.isoformat(),
            "timezone": tz,
            "mode": mode,
        }
        if start_ev:
            body["start_event"] = start_ev
        if ret_ev:
            body["return_event"] = ret_ev
        got = retention(data_store, PROJECT, body)
        want = retention_oracle(
            ROWS, PROJECT, START, END, period, periods, tz, mode, start_ev, ret_ev
        )
        assert {c["cohort_start"]: c["retained"] for c in got["cohorts"]} == want
        for c in got["cohorts"]:
            assert c["retained"][0] == c["size"]
            assert c["rates"][0] == 1.0
            assert all(0 <= r <= 1 for r in c["rates"])
            if mode == "on_or_after":
                assert c["retained"][1:] == sorted(c["retained"][1:], reverse=True)


@pytest.mark.parametrize("tz", ["UTC", "America/Sao_Paulo"])
@pytest.mark.parametrize("days", [20, 53, 54, 87])
def test_exact_daily_retention_on_both_plans(data_store, tz, days):
    # Up to 53 days (+ 10 periods) the periods fit the per-user 63-bit mask; from 54 days on
    # the exact mode takes the join plan. Both must give the oracle's answer.
    end = START + timedelta(days=days)
    for start_ev, ret_ev in [(None, None), (CONDS[1], CONDS[2])]:
        body = {"period": "day", "periods": 10, "start_time": START.isoformat(),
                "end_time": end.isoformat(), "timezone": tz, "mode": "exact"}  # fmt: skip
        if start_ev:
            body["start_event"], body["return_event"] = start_ev, ret_ev
        got = retention(data_store, PROJECT, body)
        want = retention_oracle(ROWS, PROJECT, START, end, "day", 10, tz, "exact", start_ev, ret_ev)
        assert {c["cohort_start"]: c["retained"] for c in got["cohorts"]} == want


def test_sao_paulo_dst_start_day_has_no_midnight(load):
    # 2018-11-04 02:30 UTC is 2018-11-03 23:30 (-03); 03:30 UTC is 2018-11-04 01:30 (-02).
    store = load(
        [
            event("a", datetime(2018, 11, 4, 2, 30)),
            event("b", datetime(2018, 11, 4, 3, 30)),
            event("a", datetime(2018, 11, 5, 1, 0)),  # 2018-11-04 23:00 local
        ]
    )
    got = retention(
        store,
        PROJECT,
        {
            "period": "day",
            "periods": 3,
            "timezone": "America/Sao_Paulo",
            "start_time": "2018-11-01T00:00:00Z",
            "end_time": "2018-11-10T00:00:00Z",
        },
    )
    assert [(c["cohort_start"], c["retained"]) for c in got["cohorts"]] == [
        ("2018-11-03", [1, 1, 0]),
        ("2018-11-04", [1, 0, 0]),
    ]
    utc = retention(
        store,
        PROJECT,
        {
            "period": "day",
            "periods": 3,
            "start_time": "2018-11-01T00:00:00Z",
            "end_time": "2018-11-10T00:00:00Z",
        },
    )
    assert [(c["cohort_start"], c["retained"]) for c in utc["cohorts"]] == [
        ("2018-11-04", [2, 1, 0])
    ]


def test_berlin_week_boundary_is_local_monday(load):
    # Sunday 2024-03-31 22:30 UTC is Monday 00:30 CEST (after the DST switch).
    store = load(
        [event("a", datetime(2024, 3, 31, 22, 30)), event("b", datetime(2024, 3, 31, 21, 30))]
    )
    got = retention(
        store,
        PROJECT,
        {
            "period": "week",
            "periods": 2,
            "timezone": "Europe/Berlin",
            "start_time": "2024-03-20T00:00:00Z",
            "end_time": "2024-04-10T00:00:00Z",
        },
    )
    assert [(c["cohort_start"], c["size"]) for c in got["cohorts"]] == [
        ("2024-03-25", 1),
        ("2024-04-01", 1),
    ]


def test_first_time_cohort_ignores_users_seen_before_range(load):
    store = load(
        [
            event("old", datetime(2024, 1, 1)),
            event("old", datetime(2024, 3, 2)),
            event("new", datetime(2024, 3, 2)),
        ]
    )
    got = retention(
        store,
        PROJECT,
        {
            "period": "day",
            "periods": 2,
            "start_time": "2024-03-01T00:00:00Z",
            "end_time": "2024-03-05T00:00:00Z",
        },
    )
    assert [(c["cohort_start"], c["size"]) for c in got["cohorts"]] == [("2024-03-02", 1)]


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({"timezone": "Nowhere/City"}, "unknown_timezone", "timezone"),
        ({"period": "year"}, "invalid_query", "period"),
        ({"periods": 0}, "invalid_query", "periods"),
        (
            {"start_event": {"condition_type": "nope"}},
            "unknown_condition_type",
            "start_event.condition_type",
        ),
        (
            {"start_time": "2024-03-02T00:00:00Z", "end_time": "2024-03-02T00:00:00Z"},
            "invalid_time_range",
            "end_time",
        ),
    ],
)
def test_invalid_cohort_queries(store, body, code, path):
    with pytest.raises(ValidationFailed) as info:
        retention(store, PROJECT, body)
    assert (info.value.code, info.value.details[0]["path"]) == (code, path)
