"""Durability: a 202 survives SIGKILL of the server mid-load, with acknowledged events still in
the ingest log's backlog (not yet in the store); client retries never duplicate. Graceful
shutdown (SIGTERM) loads everything it acknowledged into the store."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import duckdb
import httpx

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY

ENV = {"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0"}


def _batch(prefix: str, size: int) -> list[dict]:
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
    url: str, stop: threading.Event, acked: list[str], sent: list[list[dict]], lock: threading.Lock
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
                assert response.json()["accepted"] == len(batch)
                with lock:
                    acked.extend(e["event_id"] for e in batch)


def _stored_ids(data: Path) -> list[str]:
    # The store process of a killed server exits once it notices (it finishes its round).
    deadline = time.monotonic() + 30
    while True:
        try:
            with duckdb.connect(str(data / "avila.duckdb"), read_only=True) as conn:
                return [row[0] for row in conn.execute("SELECT event_id FROM events").fetchall()]
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_sigkill_mid_load_loses_no_acknowledged_event_and_retries_do_not_duplicate(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    # Small loader transactions: the loader falls behind the clients, so at the kill part of
    # what was acknowledged is only in the ingest log.
    server = ServerProcess(data, env={**ENV, "AVILA_FLUSH_MAX_EVENTS": "100"}).start()
    stop, lock = threading.Event(), threading.Lock()
    acked: list[str] = []
    sent: list[list[dict]] = []
    clients = [
        threading.Thread(target=_load, args=(server.url, stop, acked, sent, lock)) for _ in range(8)
    ]
    for c in clients:
        c.start()
    deadline = time.monotonic() + 30
    backlog = 0
    with httpx.Client(base_url=server.url, timeout=10) as probe:
        while (len(acked) < 5_000 or backlog == 0) and time.monotonic() < deadline:
            backlog = probe.get("/health").json()["ingest_log"]["events"]
            time.sleep(0.02)
    server.kill()  # SIGKILL while requests are in flight
    stop.set()
    for c in clients:
        c.join(30)
    acked_before_crash = set(acked)
    assert len(acked_before_crash) >= 5_000
    assert backlog > 0, "no backlog at the kill"
    loaded_at_kill = set(_stored_ids(data))
    assert not acked_before_crash <= loaded_at_kill, "every acknowledged event was loaded already"

    restarted = ServerProcess(data, env=ENV).start()
    try:
        with httpx.Client(
            base_url=restarted.url, headers={"x-api-key": TEST_KEY}, timeout=30
        ) as client:
            for batch in sent:  # the client retries everything it ever sent
                body = client.post("/api/v1/events/batch", json={"events": batch}).json()
                ids = {e["event_id"] for e in batch}
                if ids <= acked_before_crash:
                    assert body["accepted"] == 0 and body["duplicates"] == len(batch)
    finally:
        assert restarted.stop() == 0

    stored = _stored_ids(data)
    assert len(stored) == len(set(stored)), "a retry stored an event twice"
    assert acked_before_crash <= set(stored), "an acknowledged event was lost"
    assert {e["event_id"] for batch in sent for e in batch} == set(stored)


def test_sigterm_flushes_and_exits_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, env=ENV).start()
    stop, lock = threading.Event(), threading.Lock()
    acked: list[str] = []
    sent: list[list[dict]] = []
    clients = [
        threading.Thread(target=_load, args=(server.url, stop, acked, sent, lock)) for _ in range(4)
    ]
    for c in clients:
        c.start()
    while len(acked) < 1_000:
        time.sleep(0.02)
    assert server.stop() == 0  # graceful: SIGTERM, drain, flush
    stop.set()
    for c in clients:
        c.join(30)
    assert set(acked) <= set(_stored_ids(data))
    assert "avila stopped; pending events flushed" in server.log()
