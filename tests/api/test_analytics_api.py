"""The analytics endpoints end to end: a real server, events ingested over HTTP, then queried."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from tests.api.api_data import (
    ADMIN_KEY,
    SEED_KEY,
    T0,
    Api,
    analytics_server,
    assert_error,
    project_a_events,
)

RANGE = {
    "start_time": (T0 - timedelta(days=1)).isoformat(),
    "end_time": (T0 + timedelta(days=9)).isoformat(),
}
SHOP_STEPS = [
    {"name": "Home", "condition_type": "page_view", "condition_value": "/"},
    {"name": "Product", "condition_type": "page_view", "condition_value": "/product"},
    {"name": "Cart", "condition_type": "add_to_cart", "condition_value": ""},
    {"name": "Purchase", "condition_type": "purchase", "condition_value": ""},
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with analytics_server(tmp_path_factory.mktemp("analytics-api")) as running:
        yield running


@pytest.fixture(scope="module")
def a(api: Api) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


@pytest.fixture(scope="module")
def b(api: Api) -> Iterator[httpx.Client]:
    with api.client(api.key_b) as client:
        yield client


def test_seed_readme_funnel_curl_verbatim(api: Api) -> None:
    # The README's curl, byte for byte, with its key (default range: the last 30 days).
    body = """{
    "funnel_name": "E-commerce Conversion",
    "steps": [
      { "name": "Home", "condition_type": "page_view", "condition_value": "/" },
      { "name": "Product", "condition_type": "page_view", "condition_value": "/product" },
      { "name": "Cart", "condition_type": "add_to_cart", "condition_value": "" },
      { "name": "Purchase", "condition_type": "purchase", "condition_value": "" }
    ]
  }"""
    response = httpx.post(
        api.server.url + "/api/v1/analytics/funnel",
        content=body,
        headers={"Content-Type": "application/json", "x-api-key": SEED_KEY},
        # curl waits as long as it takes; the module's first report also starts a query
        # worker process, which on a loaded machine took over httpx's default 5 s
        timeout=60,
    )
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["funnel_name"] == "E-commerce Conversion"
    assert [s["name"] for s in got["steps"]] == ["Home", "Product", "Cart", "Purchase"]
    # u1..u4 visit /; u1, u2 reach /product; only u1 adds to cart and buys (u4 bought first).
    assert [s["count"] for s in got["steps"]] == [4, 2, 1, 1]
    assert got["total_users"] == 4
    assert got["overall_conversion_rate"] == pytest.approx(0.25)
    for step in got["steps"]:
        assert {
            "name",
            "count",
            "conversion_rate",
            "step_conversion_rate",
            "drop_off",
            "median_time_to_convert_seconds",
            "avg_time_to_convert_seconds",
        } <= set(step)
    assert got["steps"][1]["step_conversion_rate"] == pytest.approx(0.5)
    assert got["steps"][1]["drop_off"] == 2
    # u1 took 60 s, u2 300 s from / to /product
    assert got["steps"][1]["median_time_to_convert_seconds"] == pytest.approx(180.0)


def test_funnel_window_mode_and_breakdown(a: httpx.Client) -> None:
    body = {
        "steps": SHOP_STEPS[:2],
        "conversion_window_seconds": 120,
        "mode": "strict_increase",
        "breakdown": "context.device.browser",
        **RANGE,
    }
    got = a.post("/api/v1/analytics/funnel", json=body).json()
    assert [s["count"] for s in got["steps"]] == [4, 1]  # u2 took 5 minutes
    by_browser = {b["value"]: [s["count"] for s in b["steps"]] for b in got["breakdowns"]}
    assert by_browser == {"Chrome": [3, 1], "Firefox": [1, 0]}


def test_cohort_retention(a: httpx.Client) -> None:
    body = {"period": "week", "periods": 3, **RANGE}
    got = a.post("/api/v1/analytics/cohort", json=body)
    assert got.status_code == 200, got.text
    cohorts = got.json()["cohorts"]
    assert sum(c["size"] for c in cohorts) == 4
    for c in cohorts:
        assert c["retained"][0] == c["size"] and c["rates"][0] == 1.0
        assert len(c["retained"]) == len(c["rates"]) == 3
    # u1 comes back exactly 7 days later: the next ISO week.
    first_week = cohorts[0]
    assert first_week["retained"][1] >= 1
    returning = a.post(
        "/api/v1/analytics/cohort",
        json={
            **body,
            "start_event": {"condition_type": "purchase"},
            "return_event": {"condition_type": "page_view", "condition_value": "/"},
        },
    ).json()
    assert sum(c["size"] for c in returning["cohorts"]) == 2  # u1 and u4 bought


def test_rfm_scores_only_this_projects_buyers(a: httpx.Client, b: httpx.Client) -> None:
    got = a.post("/api/v1/analytics/rfm", json={}).json()
    assert got["users_scored"] == 2
    assert sum(s["users"] for s in got["segments"]) == 2
    assert sum(s["share"] for s in got["segments"]) == pytest.approx(1.0)
    no_body = a.post("/api/v1/analytics/rfm")
    assert no_body.status_code == 200 and no_body.json()["users_scored"] == 2
    assert b.post("/api/v1/analytics/rfm", json={}).json()["users_scored"] == 1


def test_rfm_lists_each_segments_members_as_the_user_endpoint_scores_them(
    a: httpx.Client,
) -> None:
    got = a.post("/api/v1/analytics/rfm", json={"members": 10}).json()
    members = [m for s in got["segments"] for m in s["members"]]
    assert len(members) == got["users_scored"] == 2
    for segment in got["segments"]:
        assert segment["revenue"] == pytest.approx(sum(m["monetary"] for m in segment["members"]))
    for member in members:
        one = a.get(
            f"/api/v1/users/{member['user_id']}/segment",
            params={"reference_date": got["reference_date"]},
        ).json()
        assert one == member
    assert_error(
        a.post("/api/v1/analytics/rfm", json={"members": -1}), 422, "validation_failed", "members"
    )


def test_overview(a: httpx.Client) -> None:
    response = a.get("/api/v1/analytics/overview", params=RANGE)
    assert response.status_code == 200, response.text
    got = response.json()
    events = project_a_events()
    assert got["total_events"] == len(events)
    assert got["unique_users"] == 4
    assert got["revenue"] == pytest.approx(70.0)
    assert got["events_by_type"] == {"page_view": 7, "purchase": 2, "add_to_cart": 1}
    assert got["top_pages"][0] == {"url": "/", "views": 5}
    assert got["sessions"] == 6  # u1: 2, u2: 1 (session_id), u3: 1, u4: 2
    assert sum(d["users"] for d in got["dau"]) >= 4
    for key in ("bounce_rate", "avg_session_duration_seconds"):
        assert isinstance(got[key], float)
    filtered = a.get(
        "/api/v1/analytics/overview",
        params={
            **RANGE,
            "filters": json.dumps([{"property": "context.device.browser", "value": "Firefox"}]),
        },
    ).json()
    assert filtered["total_events"] == 1 and filtered["unique_users"] == 1


def test_trends_with_interval_and_breakdown(a: httpx.Client) -> None:
    got = a.get(
        "/api/v1/analytics/trends",
        params={**RANGE, "interval": "week", "breakdown": "context.device.browser"},
    ).json()
    assert got["interval"] == "week"
    totals = {s["breakdown_value"]: s["total"] for s in got["series"]}
    assert totals == {"Chrome": 9, "Firefox": 1}
    only_purchases = a.get(
        "/api/v1/analytics/trends", params={**RANGE, "event_type": "purchase"}
    ).json()
    assert only_purchases["series"][0]["total"] == 2


def test_sessions(a: httpx.Client) -> None:
    got = a.get("/api/v1/analytics/sessions", params=RANGE).json()
    assert got["sessions"] == 6
    assert got["pages_per_session"] == pytest.approx(7 / 6)
    assert sum(d["sessions"] for d in got["by_day"]) == 6
    assert {"sessions", "avg_duration_seconds", "bounce_rate", "pages_per_session"} <= set(got)


def test_realtime_counts_recently_received_events(a: httpx.Client, b: httpx.Client) -> None:
    got = a.get("/api/v1/analytics/realtime").json()
    # Everything was received moments ago, whatever its (old) event time.
    assert got["events_last_15_minutes"] == len(project_a_events())
    assert got["active_users_last_5_minutes"] == 4
    assert {"events_last_minute", "events_last_5_minutes", "events_per_second", "top_pages"} <= set(
        got
    )
    assert b.get("/api/v1/analytics/realtime").json()["active_users_last_5_minutes"] == 2


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({"steps": SHOP_STEPS[:1]}, "funnel_needs_two_steps", "steps"),
        (
            {"steps": [{"condition_type": "teleport"}, SHOP_STEPS[1]]},
            "unknown_condition_type",
            "steps[0].condition_type",
        ),
        (
            {
                "steps": [
                    SHOP_STEPS[0],
                    {"condition_type": "page_view", "condition_value": "(", "match": "regex"},
                ]
            },
            "invalid_regex",
            "steps[1].condition_value",
        ),
        (
            {
                "steps": SHOP_STEPS,
                "start_time": "2025-02-01T00:00:00Z",
                "end_time": "2025-01-01T00:00:00Z",
            },
            "invalid_time_range",
            "end_time",
        ),
        ({"steps": SHOP_STEPS, "breakdown": "no.such.path"}, "unknown_property", "breakdown"),
        (
            {"steps": SHOP_STEPS, "filters": [{"property": "nope", "value": 1}]},
            "unknown_property",
            "filters[0].property",
        ),
        ({"steps": 3}, "validation_failed", "steps"),
        ({"steps": SHOP_STEPS, "mode": "sideways"}, "validation_failed", "mode"),
        ({"funnel_name": "no steps"}, "validation_failed", None),
    ],
)
def test_funnel_errors_are_422_with_code_and_path(a, body, code, path) -> None:
    assert_error(a.post("/api/v1/analytics/funnel", json=body), 422, code, path)


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "code", "path"),
    [
        (
            "POST",
            "/api/v1/analytics/cohort",
            {"json": {"period": "fortnight"}},
            422,
            "validation_failed",
            "period",
        ),
        (
            "POST",
            "/api/v1/analytics/cohort",
            {"json": {"return_event": {"condition_type": "nope"}}},
            422,
            "unknown_condition_type",
            "return_event.condition_type",
        ),
        (
            "POST",
            "/api/v1/analytics/rfm",
            {"json": {"window_days": 0}},
            422,
            "validation_failed",
            "window_days",
        ),
        (
            "GET",
            "/api/v1/analytics/overview",
            {"params": {"start_time": "2025-02-01T00:00:00Z", "end_time": "2025-01-01T00:00:00Z"}},
            422,
            "invalid_time_range",
            "end_time",
        ),
        (
            "GET",
            "/api/v1/analytics/overview",
            {"params": {"filters": "[{"}},
            422,
            "invalid_filter",
            "filters",
        ),
        (
            "GET",
            "/api/v1/analytics/overview",
            {"params": {"timezone": "Mars/Olympus"}},
            422,
            "unknown_timezone",
            "timezone",
        ),
        (
            "GET",
            "/api/v1/analytics/trends",
            {"params": {"breakdown": "context.nope!"}},
            422,
            "unknown_property",
            "breakdown",
        ),
        (
            "GET",
            "/api/v1/analytics/trends",
            {"params": {"interval": "fortnight"}},
            422,
            "invalid_query",
            "interval",
        ),
        (
            "GET",
            "/api/v1/analytics/sessions",
            {"params": {"start_time": "yesterday"}},
            422,
            "invalid_query",  # a query-string mistake, as docs/analytics.md documents
            "start_time",
        ),
        (
            "POST",
            "/api/v1/analytics/funnel",
            {"content": b"{nope", "headers": {"content-type": "application/json"}},
            400,
            "malformed_json",
            None,
        ),
    ],
)
def test_error_shape_and_codes(a, method, url, kwargs, status, code, path) -> None:
    assert_error(a.request(method, url, **kwargs), status, code, path)


def test_auth_is_required(api: Api) -> None:
    with httpx.Client(base_url=api.server.url) as anonymous:
        assert_error(anonymous.get("/api/v1/analytics/overview"), 401, "missing_api_key")
        assert_error(
            anonymous.post("/api/v1/analytics/funnel", json={"steps": SHOP_STEPS}),
            401,
            "missing_api_key",
        )


def test_project_b_never_sees_project_a(a: httpx.Client, b: httpx.Client) -> None:
    funnel_b = b.post("/api/v1/analytics/funnel", json={"steps": SHOP_STEPS, **RANGE}).json()
    assert [s["count"] for s in funnel_b["steps"]] == [2, 1, 0, 0]  # B's u1 and b1 only
    overview_b = b.get("/api/v1/analytics/overview", params=RANGE).json()
    assert overview_b["total_events"] == 4 and overview_b["unique_users"] == 2
    assert overview_b["revenue"] == pytest.approx(999.0)
    assert b.get("/api/v1/analytics/sessions", params=RANGE).json()["sessions"] == 2
    cohorts_b = b.post("/api/v1/analytics/cohort", json={"period": "week", **RANGE}).json()
    assert sum(c["size"] for c in cohorts_b["cohorts"]) == 2
    # ... and A's numbers do not include B's events.
    overview_a = a.get("/api/v1/analytics/overview", params=RANGE).json()
    assert overview_a["revenue"] == pytest.approx(70.0)


def test_every_analytics_and_users_route_is_in_openapi(a: httpx.Client) -> None:
    paths = a.get("/openapi.json").json()["paths"]
    expected = {
        "/api/v1/analytics/funnel": "post",
        "/api/v1/analytics/cohort": "post",
        "/api/v1/analytics/rfm": "post",
        "/api/v1/analytics/overview": "get",
        "/api/v1/analytics/trends": "get",
        "/api/v1/analytics/sessions": "get",
        "/api/v1/analytics/realtime": "get",
        "/api/v1/users/{user_id}": "get",
        "/api/v1/users/{user_id}/segment": "get",
        "/api/v1/users/{user_id}/sessions": "get",
    }
    for path, method in expected.items():
        assert method in paths.get(path, {}), path
    assert "delete" in paths["/api/v1/users/{user_id}"]
    funnel_body = paths["/api/v1/analytics/funnel"]["post"]["requestBody"]
    assert "FunnelQuery" in json.dumps(funnel_body)


def test_all_env_keys_share_the_default_project(api: Api) -> None:
    with api.client(SEED_KEY) as seed, api.client(ADMIN_KEY) as admin:
        one = seed.get("/api/v1/analytics/overview", params=RANGE).json()
        two = admin.get("/api/v1/analytics/overview", params=RANGE).json()
    assert one["total_events"] == two["total_events"]
