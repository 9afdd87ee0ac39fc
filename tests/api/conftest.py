"""Fixtures of the API-as-clients-see-it tests: a server loaded like ``make run``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from avila.testing import ServerProcess
from tests.api.demo_server import demo_key, start_demo_server


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``make run``'s server (``.env.example``, default demo) plus a little live traffic, so
    the real-time counters, which count only what arrives now, have something to show."""
    server = start_demo_server(tmp_path_factory, "demo-server")
    now = datetime.now(UTC).isoformat()
    live = [
        {
            "event_id": f"live-{uuid.uuid4()}",
            "user_id": f"live_user_{i}",
            "timestamp": now,
            "event_type": {"type": "PageView", "data": {"url": "/"}},
        }
        for i in range(5)
    ]
    response = httpx.post(
        server.url + "/api/v1/events/batch",
        json={"events": live},
        headers={"x-api-key": demo_key()},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    yield server
    server.stop()
