"""``window.avila.variant(key)`` in headless Chromium: the API's variant, one exposure event."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.tracker.conftest import TrackedServer, browser, site, tracked_server  # noqa: F401
from tests.tracker.test_tracker_browser import wait_for_accepted

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Landing</title>
<script src="{server}/avila.js" data-api-key="{key}" defer></script>
</head><body><h1 id="hero">Welcome</h1></body></html>
"""


def test_variant_returns_the_api_assignment_and_records_one_exposure(
    tracked_server: TrackedServer,  # noqa: F811
    site: Callable[[str], str],  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    server = tracked_server
    admin = httpx.Client(base_url=server.url, headers={"x-api-key": server.read_key}, timeout=30)
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = {
        "key": "hero-banner",
        "variants": [
            {"name": "control", "weight": 1},
            {"name": "big", "weight": 1},
            {"name": "video", "weight": 1},
        ],
        "goal": {"type": "conversion", "condition_type": "custom", "condition_value": "signed_up"},
        "exposure": {"condition_type": "custom", "condition_value": "$exposure"},
        "start_time": start,
    }
    assert admin.post("/api/v1/experiments", json=body).status_code == 201

    origin = site(PAGE.format(server=server.url, key=server.ingest_key))
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(origin + "/")
    page.wait_for_function("window.avila && window.avila.__avila")

    shown = page.evaluate("avila.variant('hero-banner')")
    again = page.evaluate("avila.variant('hero-banner')")
    missing = page.evaluate("avila.variant('no-such-experiment')")
    anonymous_id = page.evaluate("avila.anonymousId()")
    page.evaluate("avila.track('signed_up')")
    page.evaluate("avila.flush()")
    page.close()
    assert errors == []

    assignment = admin.get(
        "/api/v1/experiments/hero-banner/assignment", params={"user_id": anonymous_id}
    ).json()
    assert shown == again == assignment["variant"]
    assert missing is None

    wait_for_accepted(server.url, 3)  # page view, one exposure, the goal
    results = admin.get("/api/v1/experiments/hero-banner/results").json()
    by_name = {v["name"]: v for v in results["variants"]}
    assert {name: v["exposed"] for name, v in by_name.items()} == {
        name: int(name == shown) for name in ("control", "big", "video")
    }
    assert by_name[shown]["converted"] == 1
    admin.close()

    conn = server.stored()
    rows = conn.execute(
        "SELECT user_id, data FROM events WHERE event_name = '$exposure'"
    ).fetchall()
    conn.close()
    assert [(user, json.loads(data)["properties"]) for user, data in rows] == [
        (anonymous_id, {"experiment": "hero-banner", "variant": shown})
    ]
