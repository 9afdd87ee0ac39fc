"""Backpressure, disk full and idempotency across the backlog, on a real server process.

A slow loader is made with ``AVILA_FLUSH_MAX_EVENTS`` (rows per loader transaction): with a
handful of rows per transaction the loader falls behind a few HTTP clients, so a backlog exists.
Disk full is a real full filesystem: the ingest log on a small tmpfs mount (the tests run as
root, as CI does), filled up with a file.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.foundation.helpers import assert_error
from tests.ingest.small_filesystems import fill, mounted_tmpfs

ENV = {"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0"}


def _batch(prefix: str, size: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{prefix}-{i}",
            "user_id": f"user-{i % 11}",
            "timestamp": "2026-01-15T10:00:00Z",
            "event_type": {"type": "PageView", "data": {"url": f"/p/{i}"}},
        }
        for i in range(size)
    ]


def _stored_ids(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return [row[0] for row in conn.execute("SELECT event_id FROM events").fetchall()]


def _backlog(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/health").json()["ingest_log"])


def test_backpressure_answers_503_with_retry_after_and_keeps_every_acknowledged_event(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {
        **ENV,
        "AVILA_FLUSH_MAX_EVENTS": "1",  # one entry per loader transaction: a slow loader
        "AVILA_INGEST_BACKLOG_MAX_BYTES": "60000",
    }
    server = ServerProcess(data, env=env).start()
    acked: list[str] = []
    refused: list[tuple[list[str], httpx.Response]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}) as c:
            while not stop.is_set():
                batch = _batch(uuid.uuid4().hex[:12], 20)
                response = c.post("/api/v1/events/batch", json={"events": batch}, timeout=30)
                ids = [e["event_id"] for e in batch]
                with lock:
                    if response.status_code == 202:
                        acked.extend(ids)
                    else:
                        refused.append((ids, response))
                        stop.set()

    try:
        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        stop.wait(60)
        stop.set()
        for t in threads:
            t.join(30)
        assert refused, "no 503 although the backlog passed its limit"
        _, response = refused[0]
        error = assert_error(response, 503, "ingest_backlog_full")
        assert int(response.headers["retry-after"]) >= 1
        assert error["message"]
        with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}) as c:
            # the loader catches up by itself, then ingest is accepted again
            deadline = time.monotonic() + 60
            while _backlog(c)["bytes"] > 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _backlog(c)["events"] == 0
            retry = c.post("/api/v1/events/batch", json={"events": _batch("after", 5)})
            assert retry.status_code == 202, retry.text
            acked.extend(f"after-{i}" for i in range(5))
    finally:
        assert server.stop() == 0
    stored = _stored_ids(data / "avila.duckdb")
    assert len(stored) == len(set(stored))
    assert set(acked) <= set(stored)
    never_acked = {i for ids, _ in refused for i in ids}
    assert not never_acked & set(stored), "a refused event was stored"


def test_a_retry_while_the_first_copy_is_in_the_backlog_is_a_duplicate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**ENV, "AVILA_FLUSH_MAX_EVENTS": "1"}
    with (
        ServerProcess(data, env=env) as server,
        httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c,
    ):
        # many small entries: the one-entry-per-transaction loader needs a while for them
        batches = [_batch(f"b{n}", 2) for n in range(300)]
        for batch in batches:
            assert c.post("/api/v1/events/batch", json={"events": batch}).status_code == 202
        backlog = _backlog(c)
        last = batches[-1]
        retried = c.post("/api/v1/events/batch", json={"events": last}).json()
        assert backlog["events"] > 0, f"no backlog to test against: {backlog}"
        assert retried["accepted"] == 0 and retried["duplicates"] == len(last)
    stored = _stored_ids(data / "avila.duckdb")
    assert len(stored) == 600 == len(set(stored))


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "logfs", "3m") as mount:
        yield mount


def test_disk_full_answers_503_loses_nothing_and_recovers_by_itself(
    tmp_path: Path, small_fs: Path
) -> None:
    data = tmp_path / "data"
    env = {**ENV, "AVILA_INGEST_LOG_DIR": str(small_fs / "log")}
    server = ServerProcess(data, env=env).start()
    acked: list[str] = []
    failed: list[str] = []
    try:
        with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
            for n in range(5):
                batch = _batch(f"before{n}", 50)
                assert c.post("/api/v1/events/batch", json={"events": batch}).status_code == 202
                acked.extend(e["event_id"] for e in batch)
            filler = fill(small_fs)
            for n in range(3):
                batch = _batch(f"full{n}", 200)
                response = c.post("/api/v1/events/batch", json={"events": batch})
                assert_error(response, 503, "disk_full")
                assert response.headers["retry-after"]
                failed.extend(e["event_id"] for e in batch)
            assert "No space" in str(_backlog(c)["last_error"]) or _backlog(c)["last_error"]
            # a retry of a refused batch is not a duplicate: it was never acknowledged
            os.unlink(filler)
            again = _batch("full0", 200)
            body = c.post("/api/v1/events/batch", json={"events": again}).json()
            assert body["accepted"] == 200 and body["duplicates"] == 0
            acked.extend(e["event_id"] for e in again)
            for n in range(5):
                batch = _batch(f"after{n}", 50)
                assert c.post("/api/v1/events/batch", json={"events": batch}).status_code == 202
                acked.extend(e["event_id"] for e in batch)
    finally:
        assert server.stop() == 0
    stored = _stored_ids(data / "avila.duckdb")
    assert len(stored) == len(set(stored))
    assert set(stored) == set(acked)
    assert not (set(failed) - set(acked)) & set(stored)
