"""When the shared Redis stops answering, a replica answers 503 ``shared_state_unavailable``
(never a silently lifted limit or a revoked key let through) and recovers by itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from avila.errors import SharedStateUnavailable
from avila.shared import async_client
from avila.shared.claims import RedisClaims
from avila.testing import ServerProcess, free_port
from tests.conftest import TEST_KEY
from tests.scaleout.conftest import RedisServer


def _event() -> dict[str, Any]:
    return {
        "event_id": "down-" + uuid.uuid4().hex,
        "user_id": "down-user",
        "timestamp": "2026-11-30T10:00:00Z",
        "event_type": {"type": "PageView", "data": {"url": "/down"}},
    }


def test_redis_down_is_a_clear_503_and_the_replica_recovers(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    server = ServerProcess(
        tmp_path / "replica",
        env={"API_KEYS": TEST_KEY, "AVILA_REDIS_URL": redis_server.url},
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            created = client.post(
                "/api/v1/keys", json={"scopes": ["read"]}, headers={"x-api-key": TEST_KEY}
            )
            key = created.json()["key"]
            assert client.get("/api/v1/me", headers={"x-api-key": key}).status_code == 200

            redis_server.stop()
            time.sleep(0.6)  # past the key list's re-check interval
            for presented in (key, TEST_KEY):  # a stored key; a bootstrap key (rate limit)
                refused = client.get("/api/v1/me", headers={"x-api-key": presented})
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "shared_state_unavailable"
            event = _event()
            during = client.post(
                "/api/v1/events", json={"event": event}, headers={"x-api-key": TEST_KEY}
            )
            assert during.status_code == 503
            assert client.get("/health").status_code == 200

            redis_server.start()  # same port, empty (no persistence): the stored key is gone
            deadline = time.monotonic() + 20
            while True:
                after = client.post(
                    "/api/v1/events", json={"event": event}, headers={"x-api-key": TEST_KEY}
                )
                if after.status_code != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert after.status_code == 202, after.text
            assert after.json()["accepted"] == 1, "the refused attempt stored something"
    finally:
        server.stop()
        redis_server.stop()


def test_an_event_claim_without_redis_raises_shared_state_unavailable() -> None:
    async def claim() -> None:
        client = async_client(f"redis://127.0.0.1:{free_port()}/0")
        try:
            await RedisClaims(client, 3600).claim(["p\x1fe1"])
        finally:
            await client.aclose()

    with pytest.raises(SharedStateUnavailable):
        asyncio.run(claim())
