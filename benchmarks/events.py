"""Realistic ~650-byte events for the ingest benchmarks."""

from __future__ import annotations

import json

TEMPLATE = {
    "event_id": "@ID@",
    "user_id": "user_@U@",
    "session_id": "sess_@U@",
    "timestamp": "2026-11-20T10:00:00Z",
    "event_type": {
        "type": "PageView",
        "data": {"url": "/products/42", "title": "Product 42", "duration_ms": 5000},
    },
    "metadata": {"app_version": "1.4.2"},
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
        "referrer": "https://www.google.com/",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "viewport": {"width": 1920, "height": 1080},
    },
}
EVENT = json.dumps(TEMPLATE, ensure_ascii=False, separators=(",", ":")).encode()


def batch_template(size: int, marker: bytes = b"@RUN@") -> bytes:
    """A batch body whose event ids are ``<marker>-<i>``: one replace makes it unique."""
    events = [
        EVENT.replace(b"@ID@", marker + f"-{i}".encode()).replace(b"@U@", str(i % 997).encode())
        for i in range(size)
    ]
    return b'{"events":[' + b",".join(events) + b"]}"


def batch_body(prefix: str, size: int) -> bytes:
    return batch_template(size).replace(b"@RUN@", prefix.encode())


def single_body(event_id: str) -> bytes:
    return b'{"event":' + EVENT.replace(b"@ID@", event_id.encode()).replace(b"@U@", b"7") + b"}"
