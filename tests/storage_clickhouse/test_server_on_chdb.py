"""``avila serve`` on the embedded ClickHouse engine (``AVILA_STORAGE_URL=chdb:///dir``): a 202
survives SIGKILL mid-load, client retries after the restart are duplicates, every acknowledged
event is stored exactly once, and a graceful stop loads everything."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx

from avila.storage.clickhouse.store import ClickHouseStore
from avila.storage.clickhouse.target import ClickHouseOptions, parse_url
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY


def _env(db: Path) -> dict[str, str]:
    return {
        "API_KEYS": TEST_KEY,
        "RATE_LIMIT_PER_MINUTE": "0",
        "AVILA_STORAGE_URL": f"chdb://{db}",
        # Small loader rounds: the loader falls behind, so part of what is acknowledged at the
        # kill is only in the ingest log.
        "AVILA_FLUSH_MAX_EVENTS": "100",
    }


def _batch(prefix: str, size: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"{prefix}-{i}",
            "user_id": f"user-{i % 17}",
            "timestamp": "2026-01-15T10:00:00Z",
            "event_type": {"type": "PageView", "data": {"url": f"/p/{i}"}},
        }
        for i in range(size)
    ]


def _load(
    url: str,
    stop: threading.Event,
    acked: list[str],
    sent: list[list[dict[str, object]]],
    lock: threading.Lock,
) -> None:
    with httpx.Client(base_url=url, headers={"x-api-key": TEST_KEY}, timeout=10) as client:
        while not stop.is_set():
            batch = _batch(uuid.uuid4().hex[:10], 50)
            with lock:
                sent.append(batch)
            try:
                response = client.post("/api/v1/events/batch", json={"events": batch})
            except httpx.HTTPError:
                return
            if response.status_code == 202:
                with lock:
                    acked.extend(str(e["event_id"]) for e in batch)


def _stored_ids(db: Path) -> list[str]:
    # chdb admits one process per directory: the killed server's is gone once it has exited.
    store = ClickHouseStore(parse_url(f"chdb://{db}"), ClickHouseOptions(), migrate=False)
    try:
        return [r[0] for r in store.query("SELECT event_id FROM events")]
    finally:
        store.close()


def test_chdb_server_sigkill_loses_nothing_and_stores_each_event_once(tmp_path: Path) -> None:
    data, db = tmp_path / "data", tmp_path / "store.chdb"
    server = ServerProcess(data, env=_env(db)).start()
    stop, lock = threading.Event(), threading.Lock()
    acked: list[str] = []
    sent: list[list[dict[str, object]]] = []
    clients = [
        threading.Thread(target=_load, args=(server.url, stop, acked, sent, lock)) for _ in range(4)
    ]
    for c in clients:
        c.start()
    deadline = time.monotonic() + 60
    backlog = 0
    with httpx.Client(base_url=server.url, timeout=10) as probe:
        while (len(acked) < 2_000 or backlog == 0) and time.monotonic() < deadline:
            backlog = probe.get("/health").json()["ingest_log"]["events"]
            time.sleep(0.02)
    server.kill()
    stop.set()
    for c in clients:
        c.join(30)
    acked_before = set(acked)
    assert len(acked_before) >= 2_000
    assert backlog > 0, "no backlog at the kill"
    assert not acked_before <= set(_stored_ids(db)), "everything was loaded before the kill"

    restarted = ServerProcess(data, env=_env(db)).start()
    try:
        with httpx.Client(base_url=restarted.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
            for batch in sent:
                body = c.post("/api/v1/events/batch", json={"events": batch}).json()
                if {e["event_id"] for e in batch} <= acked_before:
                    assert body["accepted"] == 0 and body["duplicates"] == len(batch)
            one = _batch("last", 1)
            assert c.post("/api/v1/events/batch", json={"events": one}).status_code == 202
    finally:
        assert restarted.stop() == 0
    stored = _stored_ids(db)
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert acked_before <= set(stored), "an acknowledged event was lost"
    assert {str(e["event_id"]) for b in sent for e in b} | {"last-0"} == set(stored)
