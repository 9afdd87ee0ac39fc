"""``avila migrate-store`` (the real CLI, in a subprocess) copies a DuckDB store into ClickHouse
(chdb) row for row: every table, edge-case values included; a re-run is a no-op; a destination
holding other rows, or a source whose ingest log is not loaded, is refused with nothing written."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from avila.storage import frames
from avila.storage.clickhouse.store import ClickHouseStore
from avila.storage.clickhouse.target import ClickHouseOptions, parse_url
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.ingest_log import IngestLog, IngestLogConfig, default_log_dir
from avila.storage.load_progress import LoadProgress
from avila.storage.schema import EVENT_COLUMN_NAMES, columns_to_arrow

EPOCH = datetime(1970, 1, 1)
T = datetime(2026, 2, 28, 23, 59, 59, 999_999)
TABLES = (
    "events",
    "identities",
    "telemetry",
    "telemetry_messages",
    "devices",
    "twin_desired",
    "alarm_rules",
    "experiments",
    "alert_rules",
    "alert_firings",
    "alert_deliveries",
)


def _us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def _events(n: int) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [None] * n for name in EVENT_COLUMN_NAMES}
    cols["project_id"] = ["p" if i % 4 else "other" for i in range(n)]
    cols["event_id"] = [f"e{i}" for i in range(n)]
    cols["user_id"] = [["ü", "a'b", "x\\y", "😀"][i % 4] for i in range(n)]
    cols["ts"] = [_us(T) + i * 3_600_000_001 for i in range(n)]  # across a month edge
    cols["received_at"] = [_us(T)] * n
    cols["event_type"] = ["purchase" if i % 3 == 0 else "page_view" for i in range(n)]
    cols["revenue"] = [[1e308, -0.0, 19.99, None][i % 4] if i % 3 == 0 else None for i in range(n)]
    cols["quantity"] = [2**62 if i == 0 else (i if i % 3 == 0 else None) for i in range(n)]
    cols["data"] = ['{"k": "ünï"}'] * n
    cols["country"] = [["DE", "", None][i % 3] for i in range(n)]
    return columns_to_arrow([cols])


def _build_duckdb(path: Path) -> None:
    store = DuckDBStore(path)
    store.append_events(_events(2_500))
    ts = pa.array([_us(T), _us(T) + 1], pa.int64()).cast(pa.timestamp("us"))
    store.append_table(
        "identities",
        pa.table(
            {
                "project_id": ["p", "p"],
                "anonymous_id": ["anon", "a'b"],
                "user_id": ["ü", "ü"],
                "ts": ts,
                "received_at": ts,
                "source": ["identify", None],
                "event_id": ["e1", None],
            }
        ),
    )
    store.append_table(
        "telemetry",
        pa.table(
            {
                "project_id": ["p"] * 2,
                "device_id": ["m1", "m2"],
                "ts": ts,
                "metric": ["temp", "rpm"],
                "value": [21.5, 1e9],
                "received_at": ts,
            }
        ),
    )
    store.append_table(
        "telemetry_messages",
        pa.table(
            {
                "project_id": ["p"],
                "message_id": ["mq-1"],
                "received_at": ts[:1],
            }
        ),
    )
    for i in range(3):
        store.insert_new(
            "devices",
            ("project_id", "device_id"),
            {
                "project_id": "p",
                "device_id": f"m{i}",
                "device_type": "cnc",
                "attributes": '{"site": "s"}',
                "first_seen": T,
                "last_seen": None,
            },
        )
    store.insert_new(
        "twin_desired",
        ("project_id", "device_id"),
        {
            "project_id": "p",
            "device_id": "m1",
            "desired": '{"rpm": 5}',
            "version": 3,
            "updated_at": T,
        },
    )
    store.upsert(
        "alarm_rules",
        ("project_id", "device_type"),
        {
            "project_id": "p",
            "device_type": "cnc",
            "rules": "[]",
            "updated_at": T,
        },
    )
    store.insert_new(
        "experiments",
        ("project_id", "key"),
        {
            "project_id": "p",
            "key": "exp",
            "definition": "{}",
            "start_time": T,
            "end_time": None,
            "created_at": T,
        },
    )
    store.execute("INSERT INTO alert_rules VALUES (?, ?, ?, ?, ?)", ["p", "r1", "n", "{}", T])
    store.execute(
        "INSERT INTO alert_firings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ["p", "f1", "r1", "n", None, ">", 3.5, T, "[]"],
    )
    store.execute(
        "INSERT INTO alert_deliveries VALUES (?, ?, ?, ?, ?, ?, ?)",
        ["p", "f1", 0, "sent", 1, None, T],
    )
    store.close()


def _rows(store: Any, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    cols = ", ".join(f'"{c}"' for c in columns)
    rows = store.query(f"SELECT {cols} FROM {table}")
    return sorted(rows, key=repr)


def _columns(duck: DuckDBStore, table: str) -> list[str]:
    return [
        c
        for (c,) in duck.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
            " ORDER BY ordinal_position",
            [table],
        )
    ]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVILA_")}
    env["AVILA_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-m", "avila.cli", "migrate-store", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_duckdb_to_chdb_row_for_row_then_idempotent_then_refused(tmp_path: Path) -> None:
    duck_path, ch_path = tmp_path / "src.duckdb", tmp_path / "dst.chdb"
    _build_duckdb(duck_path)
    src, dst = f"duckdb:///{duck_path}", f"chdb://{ch_path}"

    done = _cli(tmp_path, "--from", src, "--to", dst, "--batch-rows", "700")
    assert done.returncode == 0, done.stderr
    assert "events: copied 2500" in done.stderr

    duck = DuckDBStore(duck_path, read_only=True)
    ch = ClickHouseStore(parse_url(dst), ClickHouseOptions())
    try:
        for table in TABLES:
            columns = _columns(duck, table)
            expected = _rows(duck, table, columns)
            assert expected, f"{table}: the fixture has no rows"
            assert _rows(ch, table, columns) == expected, table
    finally:
        duck.close()

    try:
        ch.close()
        again = _cli(tmp_path, "--from", src, "--to", dst, "-q")
        assert again.returncode == 0, again.stderr
        assert "events: already copied 2500" in again.stderr
        ch = ClickHouseStore(parse_url(dst), ClickHouseOptions())
        assert ch.query("SELECT count() FROM events") == [(2500,)]
        ch.append_events(_events(1))  # a destination with other rows than the source's
        ch.close()
        refused = _cli(tmp_path, "--from", src, "--to", dst, "-q")
        assert refused.returncode == 2
        assert "events (source 2500 rows, destination 2501)" in refused.stderr
        ch = ClickHouseStore(parse_url(dst), ClickHouseOptions())
        assert ch.query("SELECT count() FROM events") == [(2501,)]
    finally:
        ch.close()


def test_a_source_with_an_unloaded_ingest_log_is_refused(tmp_path: Path) -> None:
    duck_path = tmp_path / "src.duckdb"
    DuckDBStore(duck_path).close()

    async def acknowledge_one() -> None:
        log = IngestLog(IngestLogConfig(default_log_dir(duck_path)), LoadProgress(), lambda p: None)
        log.recover(0)
        log.start()
        cols: dict[str, list[Any]] = {n: [None] for n in EVENT_COLUMN_NAMES}
        cols.update(
            project_id=["p"],
            event_id=["e"],
            user_id=["u"],
            ts=[0],
            received_at=[0],
            event_type=["page_view"],
        )
        await log.append(frames.encode_events(cols), 1)
        log.close()

    asyncio.run(acknowledge_one())
    refused = _cli(tmp_path, "--from", f"duckdb:///{duck_path}", "--to", f"chdb://{tmp_path / 'd'}")
    assert refused.returncode == 2
    assert "ingest log" in refused.stderr and "not loaded" in refused.stderr
    assert not (tmp_path / "d").exists()
