"""Segment's official Python library (segment-analytics-python) talking to a real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from segment.analytics import Client

from .live import LiveServer

Rows = Callable[[Any, str], list[dict]]


def test_official_python_library_calls_are_stored_and_stitched(
    live_server: LiveServer, rows: Rows
) -> None:
    live = live_server
    errors: list[Any] = []
    sync = Client(write_key=live.ingest_key, host=live.url, sync_mode=True, max_retries=0)
    sent: dict[str, dict] = {}

    def keep(result: tuple[bool, dict]) -> None:
        ok, message = result
        assert ok
        sent[message["messageId"]] = message

    keep(sync.page(anonymous_id="anon-py", name="Home", properties={"url": "https://py.example/"}))
    keep(
        sync.track(
            anonymous_id="anon-py",
            event="Product Viewed",
            properties={"product_id": "sku-1", "price": 12.5},
        )
    )
    keep(sync.identify("user-py", {"email": "py@example.com"}, anonymous_id="anon-py"))
    keep(
        sync.track(
            "user-py",
            "Order Completed",
            {"order_id": "ord-py", "revenue": 12.5, "currency": "USD"},
            timestamp=datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
        )
    )
    keep(sync.screen("user-py", name="Settings"))
    keep(sync.group("user-py", "acme", {"name": "Acme Inc"}))
    keep(sync.alias("legacy-py", "user-py"))
    # A retry of the same messageId (the library's own idempotency key) is stored once.
    keep(sync.track("user-py", "Button Clicked", message_id="fixed-message-id"))
    keep(sync.track("user-py", "Button Clicked", message_id="fixed-message-id"))

    # Queued mode: several messages per POST /v1/batch, gzip-compressed.
    batched = Client(
        write_key=live.ingest_key,
        host=live.url,
        gzip=True,
        upload_size=5,
        upload_interval=0.05,
        max_retries=0,
        on_error=lambda e, b: errors.append(e),
    )
    for i in range(12):
        keep(batched.track("user-py", "Batch Event", {"i": i}))
    batched.flush()
    batched.shutdown()
    assert errors == []

    # Read back through the REST API: one person, anonymous history included.
    profile = httpx.get(
        f"{live.url}/api/v1/users/user-py", headers={"x-api-key": live.key}, timeout=30
    ).json()
    assert profile["total_events"] == len(sent)
    assert profile["total_revenue"] == 12.5

    conn = live.stored()
    stored = {r["event_id"]: r for r in rows(conn, "SELECT * FROM events")}
    assert set(stored) == set(sent)  # every messageId, once
    by_name = {(r["event_type"], r["event_name"]) for r in stored.values()}
    assert {
        ("page_view", None),
        ("product_view", None),
        ("custom", "$identify"),
        ("purchase", None),
        ("custom", "$group"),
        ("custom", "$alias"),
        ("custom", "Button Clicked"),
        ("custom", "Batch Event"),
    } == by_name
    purchase = next(r for r in stored.values() if r["event_type"] == "purchase")
    # sentAt is set by the library when it posts, long after this explicit timestamp: the
    # skew correction keeps the gap, so the stored time is still about 2024-03-01.
    assert (purchase["order_id"], purchase["revenue"]) == ("ord-py", 12.5)
    assert abs(purchase["ts"] - datetime(2024, 3, 1, 9, 30)) < timedelta(minutes=5)
    metadata = json.loads(purchase["metadata"])
    assert metadata["original_timestamp"] == "2024-03-01T09:30:00Z"
    screen = next(r for r in stored.values() if r["url"] == "Settings")
    assert screen["event_type"] == "page_view"
    assert json.loads(screen["context"])["segment"]["library"]["name"] == "analytics-python"
    items = sorted(
        json.loads(r["data"])["properties"]["i"]
        for r in stored.values()
        if r["event_name"] == "Batch Event"
    )
    assert items == list(range(12))

    assert rows(conn, "SELECT anonymous_id, user_id FROM identities ORDER BY anonymous_id") == [
        {"anonymous_id": "anon-py", "user_id": "user-py"},
        {"anonymous_id": "legacy-py", "user_id": "user-py"},
    ]
    assert rows(conn, "SELECT DISTINCT user_id FROM events_resolved") == [{"user_id": "user-py"}]
    conn.close()
