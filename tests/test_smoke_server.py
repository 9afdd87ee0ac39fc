"""The seed's first curl call against a real server process."""

from __future__ import annotations

import httpx

SEED_EVENT = {
    "event": {
        "event_id": "evt_123",
        "user_id": "user_001",
        "session_id": "sess_456",
        "timestamp": "2025-11-26T10:00:00Z",
        "event_type": {
            "type": "PageView",
            "data": {"url": "/products", "title": "Products", "duration_ms": 5000},
        },
        "metadata": {},
        "context": {
            "device": {
                "device_type": "Desktop",
                "os": "Windows",
                "browser": "Chrome",
                "screen_resolution": [1920, 1080],
            },
            "location": {
                "country": "BR",
                "city": "São Paulo",
                "timezone": "America/Sao_Paulo",
                "ip_address": "192.168.1.1",
            },
            "referrer": None,
            "user_agent": "Mozilla/5.0...",
            "viewport": {"width": 1920, "height": 1080},
        },
    }
}


def test_seed_event_is_accepted_then_recognised_as_duplicate(client: httpx.Client) -> None:
    first = client.post("/api/v1/events", json=SEED_EVENT)
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": 1, "duplicates": 0, "event_ids": ["evt_123"]}
    again = client.post("/api/v1/events", json=SEED_EVENT)
    assert again.status_code == 202
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 1


def test_health(client: httpx.Client) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["storage"] == "ok" and body["version"]
