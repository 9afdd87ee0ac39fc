"""Paths, lifecycle and stickiness through the HTTP API of a real server: events ingested over
HTTP (seed shape), results exact against the pandas oracles, errors in the one error shape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from analytics_data import OTHER_PROJECT, PROJECT
from journey_oracles import journey_rows, lifecycle_oracle, paths_oracle, stickiness_oracle

from avila.security.keys import KeyStore
from avila.testing import ServerProcess

KEY = "journeys-test-key"
T0 = datetime(2024, 2, 20)
ROWS = journey_rows(seed=21, n_users=50, t0=T0, days=60)
START, END = datetime(2024, 3, 5, 12), datetime(2024, 4, 10, 6)
SEED_TYPES = {
    "page_view": "PageView",
    "click": "Click",
    "product_view": "ProductView",
    "add_to_cart": "AddToCart",
    "purchase": "Purchase",
    "custom": "Custom",
    "login": "Login",
}


def seed_event(row: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    etype = row["event_type"]
    if etype in ("page_view", "click"):
        data["url"] = row["url"]
    elif etype in ("product_view", "add_to_cart"):
        data["product_id"] = row["product_id"]
    elif etype == "purchase":
        data = {"order_id": row["order_id"], "revenue": row["revenue"]}
    elif etype == "custom":
        data["name"] = row["event_name"]
    return {
        "event_id": row["event_id"],
        "user_id": row["user_id"],
        "timestamp": row["ts"].isoformat() + "Z",
        "event_type": {"type": SEED_TYPES[etype], "data": data},
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data_dir: Path = tmp_path_factory.mktemp("journeys")
    other_key, _ = KeyStore(data_dir / "keys.sqlite").create(OTHER_PROJECT, ["ingest", "read"])
    server = ServerProcess(data_dir, env={"API_KEYS": KEY, "RATE_LIMIT_PER_MINUTE": "0"})
    server.start(timeout=120)  # the machine may be busy; startup time is not under test
    try:
        with (
            httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=60) as c,
            httpx.Client(base_url=server.url, headers={"x-api-key": other_key}, timeout=60) as o,
        ):
            for project, sender in ((PROJECT, c), (OTHER_PROJECT, o)):
                events = [seed_event(r) for r in ROWS if r["project_id"] == project]
                for i in range(0, len(events), 500):
                    response = sender.post(
                        "/api/v1/events/batch", json={"events": events[i : i + 500]}
                    )
                    assert response.status_code == 202, response.text
                    assert response.json()["rejected"] == []
            yield c
    finally:
        server.stop()


RANGE = {"start_time": START.isoformat() + "Z", "end_time": END.isoformat() + "Z"}


@pytest.mark.parametrize(
    ("start", "end", "steps"),
    [
        (None, None, 4),
        ({"condition_type": "page_view", "condition_value": "/café"}, None, 5),
        (None, {"condition_type": "purchase"}, 3),
        (
            {"condition_type": "page_view", "condition_value": "/", "match": "exact"},
            {"condition_type": "purchase"},
            6,
        ),
    ],
)
def test_paths_over_http_match_oracle(client, start, end, steps):
    body: dict[str, Any] = {**RANGE, "steps": steps, "limit_per_step": 4}
    if start:
        body["start"] = start
    if end:
        body["end"] = end
    response = client.post("/api/v1/analytics/paths", json=body)
    assert response.status_code == 200, response.text
    got = response.json()
    want = paths_oracle(ROWS, START, END, steps, start, end, limit=4)
    assert got["users"] == want["users"] > 0
    assert {(n["step"], n["name"]): n["users"] for n in got["nodes"]} == want["nodes"]
    assert {(x["source"], x["target"]): x["users"] for x in got["links"]} == want["links"]


@pytest.mark.parametrize(
    ("tz", "period"), [("Europe/Berlin", "week"), ("America/New_York", "day"), ("UTC", "month")]
)
def test_lifecycle_over_http_matches_oracle(client, tz, period):
    body = {**RANGE, "period": period, "timezone": tz}
    got = client.post("/api/v1/analytics/lifecycle", json=body).json()
    want = lifecycle_oracle(ROWS, START, END, period, tz)
    assert {
        p["period_start"]: {k: p[k] for k in ("new", "returning", "resurrecting", "dormant")}
        for p in got["periods"]
    } == want
    assert got["dormant_sign"] == -1


@pytest.mark.parametrize(("tz", "period"), [("Europe/Berlin", "week"), ("Asia/Kolkata", "month")])
def test_stickiness_over_http_matches_oracle(client, tz, period):
    cond = {"condition_type": "page_view", "condition_value": ""}
    body = {**RANGE, "period": period, "timezone": tz, "event": cond}
    got = client.post("/api/v1/analytics/stickiness", json=body).json()
    want = stickiness_oracle(ROWS, START, END, period, tz, cond)
    assert {
        p["period_start"]: [r["users"] for r in p["distribution"]] for p in got["periods"]
    } == want
    assert got["user_periods"] > 0


@pytest.mark.parametrize(
    ("url", "body", "path", "extra"),
    [
        ("/api/v1/analytics/paths", {"steps": 1}, "steps", {"minimum": 2, "maximum": 20}),
        ("/api/v1/analytics/paths", {"steps": 99}, "steps", {"minimum": 2, "maximum": 20}),
        ("/api/v1/analytics/paths", {"steps": "five"}, "steps", {"minimum": 2, "maximum": 20}),
        (
            "/api/v1/analytics/paths",
            {"start": {"condition_type": "page_view", "match": "glob"}},
            "start.match",
            {"allowed": ["contains", "exact", "prefix", "regex"]},
        ),
        (
            "/api/v1/analytics/lifecycle",
            {"period": "year"},
            "period",
            {"allowed": ["day", "month", "week"]},
        ),
        (
            "/api/v1/analytics/stickiness",
            {"period": "day"},
            "period",
            {"allowed": ["month", "week"]},
        ),
        (
            "/api/v1/analytics/stickiness",
            {"filters": [{"property": "browser", "operator": "like"}]},
            "filters[0].operator",
            {},
        ),
    ],
)
def test_schema_errors_say_what_is_allowed(client, url, body, path, extra):
    response = client.post(url, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "validation_failed"
    detail = next(d for d in error["details"] if d["path"] == path)
    assert {k: detail[k] for k in extra} == extra
    if extra:
        assert ("allowed" in detail["message"]) and error["message"] == detail["message"]


@pytest.mark.parametrize(
    ("url", "body", "code", "path"),
    [
        (
            "/api/v1/analytics/paths",
            {"include": ["page_view", "warp"]},
            "unknown_event_type",
            "include[1]",
        ),
        (
            "/api/v1/analytics/lifecycle",
            {"timezone": "Nowhere/Town"},
            "unknown_timezone",
            "timezone",
        ),
        (
            "/api/v1/analytics/stickiness",
            {**RANGE, "end_time": RANGE["start_time"]},
            "invalid_time_range",
            "end_time",
        ),
    ],
)
def test_semantic_errors(client, url, body, code, path):
    response = client.post(url, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert path in [d["path"] for d in error["details"]]


def test_routes_need_a_key_and_are_documented(client):
    for url in (
        "/api/v1/analytics/paths",
        "/api/v1/analytics/lifecycle",
        "/api/v1/analytics/stickiness",
    ):
        assert httpx.post(str(client.base_url) + url, json={}).status_code == 401
        assert client.post(url).status_code == 200  # every field has a default
    spec = client.get("/openapi.json").json()
    for url in (
        "/api/v1/analytics/paths",
        "/api/v1/analytics/lifecycle",
        "/api/v1/analytics/stickiness",
    ):
        assert "post" in spec["paths"][url]
