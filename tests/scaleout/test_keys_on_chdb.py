"""Key revocation through the keys API on chdb-backed servers (``AVILA_STORAGE_URL=chdb:///``):
two replicas sharing one Redis, each on its own embedded ClickHouse directory (chdb admits one
process per path and no ClickHouse server can run here, which the issue allows)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.scaleout.conftest import RedisServer, start_all


def _me(server: ServerProcess, key: str) -> httpx.Response:
    return httpx.get(server.url + "/api/v1/me", headers={"x-api-key": key}, timeout=30)


def test_a_key_revoked_on_one_chdb_replica_is_refused_by_the_other_within_1s(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    servers = [
        ServerProcess(
            tmp_path / f"replica{i}",
            env={
                "API_KEYS": TEST_KEY,
                "AVILA_REDIS_URL": redis_server.url,
                "AVILA_STORAGE_URL": f"chdb://{tmp_path / f'replica{i}' / 'chdb'}",
            },
        )
        for i in (1, 2)
    ]
    try:
        start_all(servers)
        a, b = servers
        assert _me(a, TEST_KEY).json()  # the chdb-backed server answers
        created = httpx.post(
            a.url + "/api/v1/keys",
            json={"scopes": ["ingest", "read"], "name": "chdb"},
            headers={"x-api-key": TEST_KEY},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["key_id"]
        event = {
            "event_id": "chdb-key-1",
            "user_id": "u1",
            "timestamp": "2026-11-30T10:00:00Z",
            "event_type": {"type": "PageView", "data": {"url": "/chdb"}},
        }
        stored = httpx.post(
            b.url + "/api/v1/events", json={"event": event}, headers={"x-api-key": key}, timeout=30
        )
        assert stored.status_code == 202, stored.text

        revoked = httpx.delete(
            b.url + f"/api/v1/keys/{key_id}", headers={"x-api-key": TEST_KEY}, timeout=30
        )
        assert revoked.status_code == 200, revoked.text
        revoked_at = time.monotonic()
        assert _me(b, key).status_code == 401
        time.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
        refused = _me(a, key)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    finally:
        for server in servers:
            server.stop()
