from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from analytics_data import PROJECT, T0, event, random_events, to_table
from analytics_oracles import funnel_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avila.analytics import funnel, funnel_dropped
from avila.errors import ValidationFailed

START, END = T0 - timedelta(days=1), T0 + timedelta(days=3)
MODES = ["ordered", "strict_increase", "strict_order", "unordered"]
STEP_POOL = [
    {"condition_type": "page_view", "condition_value": ""},
    {"condition_type": "page_view", "condition_value": "/"},
    {"condition_type": "page_view", "condition_value": "/a", "match": "prefix"},
    {"condition_type": "page_view", "condition_value": "product", "match": "contains"},
    {"condition_type": "page_view", "condition_value": "^/a/?b?$", "match": "regex"},
    {"condition_type": "click", "condition_value": ""},
    {"condition_type": "product_view", "condition_value": "p1"},
    {"condition_type": "add_to_cart", "condition_value": ""},
    {"condition_type": "purchase", "condition_value": ""},
    {"condition_type": "custom", "condition_value": "sign", "match": "prefix"},
    {"condition_type": "search", "condition_value": "shoes"},
]
WINDOWS = [1, 600, 1800, 3600, 4 * 3600, 86400, 1_209_600]

ROWS = random_events(seed=7, n_users=70)


@pytest.fixture(scope="module")
def data_store(module_store):
    module_store.append_events(to_table(ROWS))
    return module_store


def _check(store, steps, mode, window):
    got = funnel(
        store,
        PROJECT,
        {
            "steps": steps,
            "mode": mode,
            "conversion_window_seconds": window,
            "start_time": START.isoformat(),
            "end_time": END.isoformat(),
        },
    )
    counts, med, avg, _ = funnel_counts(
        ROWS, PROJECT, START, END, steps, timedelta(seconds=window), mode
    )
    assert [s["count"] for s in got["steps"]] == counts
    for k, step in enumerate(got["steps"]):
        assert step["median_time_to_convert_seconds"] == pytest.approx(med[k])
        assert step["avg_time_to_convert_seconds"] == pytest.approx(avg[k])
        assert step["drop_off"] == (counts[k - 1] - counts[k] if k else 0)
        assert step["conversion_rate"] == pytest.approx(counts[k] / counts[0] if counts[0] else 0)
    assert got["total_users"] == counts[0]
    return got


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("window", [1800, 86400])
def test_funnel_matches_oracle_on_fixed_steps(data_store, mode, window):
    steps = [STEP_POOL[0], STEP_POOL[3], STEP_POOL[7], STEP_POOL[8]]
    got = _check(data_store, steps, mode, window)
    assert got["steps"][0]["count"] > 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    step_ids=st.lists(st.integers(0, len(STEP_POOL) - 1), min_size=2, max_size=5),
    mode=st.sampled_from(MODES),
    window=st.sampled_from(WINDOWS),
)
def test_funnel_property_matches_oracle_and_never_increases(data_store, step_ids, mode, window):
    steps = [STEP_POOL[i] for i in step_ids]
    got = _check(data_store, steps, mode, window)
    counts = [s["count"] for s in got["steps"]]
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))
    assert all(0.0 <= s["step_conversion_rate"] <= 1.0 for s in got["steps"])


STEPS_ABC = [
    {"name": "A", "condition_type": "page_view", "condition_value": "/a"},
    {"name": "B", "condition_type": "page_view", "condition_value": "/b"},
    {"name": "C", "condition_type": "purchase", "condition_value": ""},
]


def _run(store, steps=STEPS_ABC, **kw):
    body = {"steps": steps, "start_time": "2024-02-01T00:00:00Z", "end_time": "2024-04-01T00:00:00"}
    body.update(kw)
    return funnel(store, PROJECT, body)


def _counts(result):
    return [s["count"] for s in result["steps"]]


def test_window_edge_is_inclusive_and_measured_from_step_one(load):
    t = T0
    store = load(
        [
            # u1: C exactly at start + window -> converts
            event("u1", t, url="/a"),
            event("u1", t + timedelta(seconds=30), url="/b"),
            event("u1", t + timedelta(seconds=60), "purchase"),
            # u2: C one microsecond past the window -> level 2
            event("u2", t, url="/a"),
            event("u2", t + timedelta(seconds=59), url="/b"),
            event("u2", t + timedelta(seconds=60, microseconds=1), "purchase"),
            # u3: a later A restarts the window; chain from the second A converts
            event("u3", t, url="/a"),
            event("u3", t + timedelta(seconds=100), url="/a"),
            event("u3", t + timedelta(seconds=110), url="/b"),
            event("u3", t + timedelta(seconds=150), "purchase"),
        ]
    )
    result = _run(store, conversion_window_seconds=60)
    assert _counts(result) == [3, 3, 2]
    assert result["steps"][2]["median_time_to_convert_seconds"] == pytest.approx(35.0)
    assert result["overall_conversion_rate"] == pytest.approx(2 / 3)


def test_ties_ordered_vs_strict_increase(load):
    store = load(
        [event("u1", T0, url="/a"), event("u1", T0, url="/b"), event("u1", T0, "purchase")]
    )
    assert _counts(_run(store)) == [1, 1, 1]
    assert _counts(_run(store, mode="strict_increase")) == [1, 0, 0]
    assert _counts(_run(store, mode="unordered")) == [1, 1, 1]


def test_out_of_order_and_strict_order(load):
    store = load(
        [
            event("u1", T0, url="/b"),
            event("u1", T0 + timedelta(minutes=1), url="/a"),
            event("u1", T0 + timedelta(minutes=2), url="/other"),
            event("u1", T0 + timedelta(minutes=3), url="/b"),
            event("u1", T0 + timedelta(minutes=4), "purchase"),
        ]
    )
    assert _counts(_run(store)) == [1, 1, 1]
    assert _counts(_run(store, mode="strict_order")) == [1, 0, 0]  # /other interrupts
    steps = [STEPS_ABC[1], STEPS_ABC[0]]
    assert _counts(_run(store, steps=steps)) == [1, 1]


def test_duplicates_and_users_without_events_in_range(load):
    rows = [event("u1", T0, url="/a"), event("u1", T0 + timedelta(minutes=1), url="/b")]
    store = load(rows + [dict(r) for r in rows] + [event("u2", T0 - timedelta(days=60), url="/a")])
    result = _run(store)
    assert _counts(result) == [1, 1, 0]
    assert result["steps"][1]["avg_time_to_convert_seconds"] == pytest.approx(60.0)


def test_project_isolation(load):
    store = load([event("u1", T0, url="/a", project_id="other"), event("u2", T0, url="/a")])
    assert _counts(_run(store)) == [1, 0, 0]


def test_filters_and_breakdown_top_n_with_other(load):
    rows = []
    for i, browser in enumerate(["Chrome"] * 4 + ["Firefox"] * 3 + ["Safari"] * 2 + ["Edge"]):
        user = f"u{i}"
        rows.append(event(user, T0, url="/a", browser=browser, country="BR" if i % 2 else "DE"))
        if i % 2:
            rows.append(event(user, T0 + timedelta(minutes=1), url="/b", browser=browser))
    store = load(rows)
    result = _run(store, steps=STEPS_ABC[:2], breakdown="context.device.browser", breakdown_limit=2)
    got = {b["value"]: [s["count"] for s in b["steps"]] for b in result["breakdowns"]}
    assert got == {"Chrome": [4, 2], "Firefox": [3, 1], "Other": [3, 2]}
    assert [b["value"] for b in result["breakdowns"]] == ["Chrome", "Firefox", "Other"]
    filtered = _run(
        store,
        steps=STEPS_ABC[:2],
        filters=[{"property": "context.device.browser", "operator": "in", "value": ["Chrome"]}],
    )
    assert _counts(filtered) == [4, 2]
    by_country = _run(
        store,
        steps=STEPS_ABC[:2],
        filters=[{"property": "context.location.country", "operator": "eq", "value": "DE"}],
    )
    assert _counts(by_country) == [5, 0]  # the /b events carry no country


def test_trend_by_day_in_time_zone(load):
    store = load(
        [
            event("u1", datetime(2024, 3, 2, 2, 0), url="/a"),  # 2024-03-01 23:00 in Sao Paulo
            event("u1", datetime(2024, 3, 2, 2, 5), url="/b"),
            event("u2", datetime(2024, 3, 2, 4, 0), url="/a"),
        ]
    )
    result = _run(
        store,
        steps=STEPS_ABC[:2],
        trend="day",
        timezone="America/Sao_Paulo",
        start_time="2024-03-01T03:00:00Z",
        end_time="2024-03-03T03:00:00Z",
    )
    assert result["trend"] == [
        {"period_start": "2024-03-01", "entered": 1, "converted": 1, "conversion_rate": 1.0},
        {"period_start": "2024-03-02", "entered": 1, "converted": 0, "conversion_rate": 0.0},
    ]


def test_empty_range_returns_zeros(store):
    result = _run(store)
    assert _counts(result) == [0, 0, 0]
    assert result["overall_conversion_rate"] == 0.0
    assert result["steps"][1]["median_time_to_convert_seconds"] is None


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({"steps": STEPS_ABC[:1]}, "funnel_needs_two_steps", "steps"),
        ({"steps": STEPS_ABC * 7}, "funnel_too_many_steps", "steps"),
        (
            {"steps": [STEPS_ABC[0], {"condition_type": "teleport"}]},
            "unknown_condition_type",
            "steps[1].condition_type",
        ),
        (
            {
                "steps": [
                    *STEPS_ABC[:2],
                    {"condition_type": "page_view", "condition_value": "(", "match": "regex"},
                ]
            },
            "invalid_regex",
            "steps[2].condition_value",
        ),
        (
            {"steps": [STEPS_ABC[0], {"condition_type": "login", "condition_value": "x"}]},
            "condition_value_unsupported",
            "steps[1].condition_value",
        ),
        (
            {
                "steps": STEPS_ABC,
                "start_time": "2024-03-02T00:00:00Z",
                "end_time": "2024-03-01T00:00:00Z",
            },
            "invalid_time_range",
            "end_time",
        ),
        (
            {"steps": STEPS_ABC, "breakdown": "context.secret'); DROP TABLE events;--"},
            "unknown_property",
            "breakdown",
        ),
        (
            {"steps": STEPS_ABC, "filters": [{"property": "nope", "value": "x"}]},
            "unknown_property",
            "filters[0].property",
        ),
        ({"steps": STEPS_ABC, "timezone": "Mars/Olympus"}, "unknown_timezone", "timezone"),
        ({"steps": STEPS_ABC, "mode": "sideways"}, "invalid_query", "mode"),
        (
            {"steps": STEPS_ABC, "conversion_window_seconds": 0},
            "invalid_query",
            "conversion_window_seconds",
        ),
        (
            {"steps": [{"name": 3, "condition_type": "page_view"}] * 2},
            "invalid_query",
            "steps[0].name",
        ),
    ],
)
def test_invalid_queries_raise_validation_failed(store, body, code, path):
    with pytest.raises(ValidationFailed) as info:
        funnel(store, PROJECT, body)
    assert info.value.code == code
    assert info.value.status == 422
    assert info.value.details[0]["path"] == path


def test_json_property_filter_uses_parameterised_path(load):
    store = load(
        [
            event("u1", T0, url="/a", data='{"properties": {"plan": "pro"}}'),
            event("u2", T0, url="/a", data='{"properties": {"plan": "free"}}'),
        ]
    )
    result = _run(
        store,
        steps=STEPS_ABC[:2],
        filters=[{"property": "event_type.data.properties.plan", "value": "pro"}],
    )
    assert _counts(result) == [1, 0]


# Users who dropped at a step: the oracle's users whose level is exactly that step.


def _body(steps, mode, window, **kw):
    body = {
        "steps": steps,
        "mode": mode,
        "conversion_window_seconds": window,
        "start_time": START.isoformat(),
        "end_time": END.isoformat(),
    }
    body.update(kw)
    return body


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "step_ids", [[0, 3, 7, 8], [1, 5, 0], [6, 7, 8, 2, 9]], ids=["pv", "click", "cart"]
)
def test_dropped_users_match_oracle_levels_and_report(data_store, mode, step_ids):
    steps = [STEP_POOL[i] for i in step_ids]
    window = 86400
    _, _, _, levels = funnel_counts(
        ROWS, PROJECT, START, END, steps, timedelta(seconds=window), mode
    )
    counts = [s["count"] for s in funnel(data_store, PROJECT, _body(steps, mode, window))["steps"]]
    seen = 0
    for k in range(1, len(steps)):
        got = funnel_dropped(data_store, PROJECT, _body(steps, mode, window, step=k, limit=1000))
        expected = sorted(user for user, level in levels.items() if level == k)
        assert got["step"] == k
        assert [u["user_id"] for u in got["users"]] == expected
        assert got["total"] == len(expected) == counts[k - 1] - counts[k]
        seen += got["total"]
    assert seen > 0  # the generated data has real drop-offs


def test_dropped_limit_keeps_total_and_lists_first_users(data_store):
    steps = [STEP_POOL[0], STEP_POOL[8]]
    full = funnel_dropped(data_store, PROJECT, _body(steps, "ordered", 86400, step=1, limit=1000))
    assert full["total"] > 3
    short = funnel_dropped(data_store, PROJECT, _body(steps, "ordered", 86400, step=1, limit=3))
    assert short["total"] == full["total"]
    assert short["users"] == full["users"][:3]
    default = funnel_dropped(data_store, PROJECT, _body(steps, "ordered", 86400, step=1))
    assert default["users"] == full["users"][:100]


@pytest.mark.parametrize("mode", MODES)
def test_dropped_zero_drop_offs_and_unicode_ids(load, mode):
    t = T0
    users = ["Zoë", "用户-1", "😀", "u\u0301", "plain"]
    rows = []
    for user in users:  # everyone does A then B
        rows += [event(user, t, url="/a"), event(user, t + timedelta(minutes=1), url="/b")]
    rows.append(event("用户-1", t + timedelta(minutes=2), "purchase"))
    rows.append(event("😀", t + timedelta(minutes=3), "purchase"))
    store = load(rows)
    body = {
        "steps": STEPS_ABC,
        "mode": mode,
        "start_time": "2024-02-01T00:00:00Z",
        "end_time": "2024-04-01T00:00:00Z",
    }
    assert _counts(funnel(store, PROJECT, body)) == [5, 5, 2]
    zero = funnel_dropped(store, PROJECT, {**body, "step": 1})
    assert zero == {"step": 1, "users": [], "total": 0}
    at_b = funnel_dropped(store, PROJECT, {**body, "step": 2})
    assert at_b["total"] == 3
    assert [u["user_id"] for u in at_b["users"]] == sorted(["Zoë", "u\u0301", "plain"])


def test_dropped_on_empty_range_is_empty(store):
    body = {
        "steps": STEPS_ABC,
        "step": 2,
        "start_time": "2020-01-01T00:00:00Z",
        "end_time": "2020-02-01T00:00:00Z",
    }
    assert funnel_dropped(store, PROJECT, body) == {"step": 2, "users": [], "total": 0}


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({"steps": STEPS_ABC, "step": 3}, "funnel_step_out_of_range", "step"),
        ({"steps": STEPS_ABC, "step": 0}, "invalid_query", "step"),
        ({"steps": STEPS_ABC, "step": 1, "limit": 1001}, "invalid_query", "limit"),
        ({"steps": STEPS_ABC, "step": 1, "limit": 0}, "invalid_query", "limit"),
        ({"steps": STEPS_ABC}, "invalid_query", ""),
        ({"steps": STEPS_ABC[:1], "step": 1}, "funnel_needs_two_steps", "steps"),
    ],
)
def test_dropped_invalid_queries(store, body, code, path):
    with pytest.raises(ValidationFailed) as info:
        funnel_dropped(store, PROJECT, body)
    assert info.value.code == code
    assert info.value.status == 422
    if path:
        assert info.value.details[0]["path"] == path
    else:
        assert "step" in info.value.message
