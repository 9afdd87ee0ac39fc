"""Event builders shared by the foundation tests."""

from __future__ import annotations

import uuid
from typing import Any


def page_view(
    user: str = "u1", url: str = "/", event_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id or f"e-{uuid.uuid4().hex}",
        "user_id": user,
        "timestamp": "2026-01-15T10:00:00Z",
        "event_type": {"type": "PageView", "data": {"url": url}},
    }
    event.update(extra)
    return event


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]
