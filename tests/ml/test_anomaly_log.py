"""Detected anomalies live in the store (``anomalies`` table), so every replica sharing the
store lists the same ones with the same ids, on DuckDB and on ClickHouse (chdb); a data
directory from before keeps its anomalies (the old SQLite file is moved into the store)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avila.ml.monitoring import AnomalyLog, anomaly_id_of
from avila.storage import Store
from avila.testing import ServerProcess
from avila.testing.backends import open_backend
from tests.conftest import TEST_KEY


def _anomaly(bucket: str, metric: str = "events.all", **extra: Any) -> dict[str, Any]:
    return {
        "metric": metric,
        "detector": "seasonal",
        "bucket_start": bucket,
        "bucket_seconds": 3600,
        "value": 120.0,
        "expected": 40.0,
        "lower": 10.0,
        "upper": 80.0,
        "score": 4.5,
        **extra,
    }


@pytest.fixture(params=["duckdb", "chdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store = open_backend(request.param, tmp_path)
    yield store
    store.close()


def test_two_logs_over_one_store_agree(store: Store) -> None:
    a, b = AnomalyLog(store), AnomalyLog(store)  # two replicas sharing the store
    first = [_anomaly("2025-02-26T14:00:00Z"), _anomaly("2025-02-26T15:00:00Z", "revenue")]
    new = a.add("p1", first)
    assert [x["bucket_start"] for x in new] == ["2025-02-26T14:00:00Z", "2025-02-26T15:00:00Z"]
    # the same detections on the other replica are not new; one more is
    again = b.add("p1", [*first, _anomaly("2025-02-26T16:00:00Z")])
    assert [x["bucket_start"] for x in again] == ["2025-02-26T16:00:00Z"]
    listed = b.query("p1")
    assert [x["bucket_start"] for x in listed] == [
        "2025-02-26T16:00:00Z",
        "2025-02-26T15:00:00Z",
        "2025-02-26T14:00:00Z",
    ]
    assert listed == a.query("p1")
    assert {x["id"] for x in new} <= {x["id"] for x in listed}
    assert listed[-1] == {"id": new[0]["id"], **first[0], "detected_at": new[0]["detected_at"]}
    assert b.query("p1", metric="revenue") == [listed[1]]
    assert b.query("p1", since="2025-02-26T15:00:00Z", until="2025-02-26T16:00:00Z") == [listed[1]]
    assert b.query("p1", limit=1) == listed[:1]
    assert b.query("p2") == [] and b.add("p2", first) != []  # projects apart


def test_ids_are_stable_json_numbers() -> None:
    key = ("p1", "events.all", "seasonal", "2025-02-26T14:00:00Z")
    assert anomaly_id_of(*key) == anomaly_id_of(*key)
    assert anomaly_id_of(*key) != anomaly_id_of("p2", *key[1:])
    assert 0 <= anomaly_id_of(*key) < 2**53
    assert anomaly_id_of("ü", "é", "x", "") < 2**53


def _old_sqlite(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """The file the server kept before the store did (its schema as it was)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE anomalies (id INTEGER PRIMARY KEY, project_id TEXT, metric TEXT, detector"
        " TEXT, bucket_start TEXT, bucket_seconds INTEGER, value REAL, expected REAL, lower REAL,"
        " upper REAL, score REAL, detected_at TEXT, UNIQUE (project_id, metric, detector,"
        " bucket_start))"
    )
    conn.executemany(
        "INSERT INTO anomalies (project_id, metric, detector, bucket_start, bucket_seconds, value,"
        " expected, lower, upper, score, detected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()


OLD_ROWS = [
    ("default", "events.all", "seasonal", "2025-01-05T10:00:00Z", 3600, 90.0, 30.0, 5.0, 60.0,
     3.1, "2025-01-05T11:02:00Z"),
    ("default", "minute_vector", "streaming", "2025-01-05T10:17:00Z", 60, 12.0, None, None, None,
     0.99, "2025-01-05T10:18:00Z"),
]  # fmt: skip


def test_an_old_sqlite_file_is_moved_into_the_store(store: Store, tmp_path: Path) -> None:
    old = tmp_path / "models" / "anomalies.sqlite"
    _old_sqlite(old, OLD_ROWS)
    log = AnomalyLog(store)
    assert log.adopt_sqlite(old) == 2
    assert not old.exists() and old.with_name("anomalies.sqlite.moved").exists()
    listed = log.query("default")
    assert [(x["bucket_start"], x["detector"], x["detected_at"]) for x in listed] == [
        ("2025-01-05T10:17:00Z", "streaming", "2025-01-05T10:18:00Z"),
        ("2025-01-05T10:00:00Z", "seasonal", "2025-01-05T11:02:00Z"),
    ]
    assert listed[0]["expected"] is None and listed[1]["upper"] == 60.0
    assert log.adopt_sqlite(old) == 0  # nothing left to move


def test_a_server_lists_the_anomalies_of_a_data_directory_from_before(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _old_sqlite(data / "models" / "anomalies.sqlite", OLD_ROWS)
    server = ServerProcess(data, env={"API_KEYS": TEST_KEY}).start()
    try:
        body = httpx.get(
            server.url + "/api/v1/ml/anomalies", headers={"x-api-key": TEST_KEY}, timeout=30
        ).json()
    finally:
        server.stop()
    assert [a["bucket_start"] for a in body["anomalies"]] == [
        "2025-01-05T10:17:00Z",
        "2025-01-05T10:00:00Z",
    ]
    assert (data / "models" / "anomalies.sqlite.moved").exists()
