"""A person identified mid-journey counts once in funnels and profiles (identity stitching)."""

from __future__ import annotations

import base64
import json

import httpx

from avila.analytics.common import events_source
from avila.analytics.funnels import funnel
from avila.analytics.profiles import user_profile
from avila.storage.duckdb.store import DuckDBStore

from .live import LiveServer


def test_stitched_person_counts_once_in_funnel_and_profile(live_server: LiveServer) -> None:
    live = live_server
    auth = {"authorization": "Basic " + base64.b64encode(f"{live.ingest_key}:".encode()).decode()}
    batch = [
        # Anonymous browsing, then sign-in (identify), then the order under the known id.
        {"type": "page", "anonymousId": "anon-s1", "properties": {"url": "https://s.example/"}},
        {
            "type": "track",
            "anonymousId": "anon-s1",
            "event": "Product Added",
            "properties": {"product_id": "p-1", "price": 5},
        },
        {"type": "identify", "anonymousId": "anon-s1", "userId": "user-s1"},
        {
            "type": "track",
            "userId": "user-s1",
            "event": "Order Completed",
            "properties": {"order_id": "o-1", "revenue": 5},
        },
        # Someone else who only looked.
        {"type": "page", "anonymousId": "anon-s2", "properties": {"url": "https://s.example/"}},
    ]
    for message in batch:  # one call each, so their timestamps are in this order
        response = httpx.post(
            live.url + "/v1/batch",
            content=json.dumps({"batch": [message]}),
            headers=auth,
            timeout=30,
        )
        assert response.json()["accepted"] == 1, response.text
    live.process.stop()

    store = DuckDBStore(live.data_dir / "avila.duckdb", read_only=True)
    try:
        result = funnel(
            store,
            "default",
            {
                "steps": [
                    {"condition_type": "page_view"},
                    {"condition_type": "add_to_cart"},
                    {"condition_type": "purchase"},
                ]
            },
        )
        # Unstitched, the purchase would belong to a user who never viewed a page: [2, 1, 0].
        assert [step["count"] for step in result["steps"]] == [2, 1, 1]
        profile = user_profile(store, "default", "user-s1")
        assert profile["total_events"] == 4
        assert profile["total_revenue"] == 5
        # The loader kept the person map in the links' transaction: reads use it (not the
        # recursive fallback), and it names the anonymous id's person.
        assert events_source(store, "default") == "events_resolved"
        assert store.query("SELECT anonymous_id, user_id FROM person_map") == [
            ("anon-s1", "user-s1")
        ]
    finally:
        store.close()
