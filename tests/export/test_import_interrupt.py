"""Ctrl-C during a direct ``avila import``: the rows stream into one INSERT that DuckDB runs on
its own threads, and the interrupt still stops it, rolls the transaction back and removes the
held-back rows' file. A real file, the real CLI in a child process, a real DuckDB store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROWS = 1_000_000


def _file(tmp_path: Path) -> Path:
    ids = pa.array([f"ctrl-c-{i}" for i in range(ROWS)])
    # row 6 repeats row 1's id: held back in the first batch, so the held rows' file beside the
    # store appears as soon as the rows stream
    ids = pa.concat_arrays([ids.slice(0, 5), ids.slice(0, 1), ids.slice(6)])
    table = pa.table(
        {
            "event_id": ids,
            "user_id": pa.array([f"u{i % 5000}" for i in range(ROWS)]),
            "event_type": pa.array(["page_view"] * ROWS),
            "timestamp": pa.array(["2025-11-26T10:00:00Z"] * ROWS),
            "data": pa.array(['{"url": "/pricing", "title": "Pricing"}'] * ROWS),
        }
    )
    path = tmp_path / "big.parquet"
    pq.write_table(table, path)
    return path


def _import(path: Path, data_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "AVILA_DATA_DIR": str(data_dir)}
    env.pop("AVILA_STORAGE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "avila.cli", "import", str(path), "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a child of a shell job may inherit SIGINT ignored; a user's terminal delivers it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_stops_a_streaming_import_and_stores_nothing(tmp_path: Path) -> None:
    path = _file(tmp_path)
    data_dir = tmp_path / "data"
    child = _import(path, data_dir)
    try:
        while not list(data_dir.glob("avila.duckdb.import-held-*")):  # the rows are streaming
            assert child.poll() is None, child.communicate()
            time.sleep(0.005)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert not list(data_dir.glob("avila.duckdb.import-held-*"))
    again = _import(path, data_dir)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"{ROWS} rows: {ROWS - 1} accepted, 1 duplicates, 0 rejected" in err, err


def test_an_import_deletes_what_a_killed_import_of_its_store_left(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    left = data_dir / "avila.duckdb.import-held-k1ll3d"
    other = data_dir / "other.duckdb.import-held-running"  # another store's import: kept
    for directory in (left, other):
        directory.mkdir(parents=True)
        (directory / "held.arrow").write_bytes(b"\0" * 1024)
    path = tmp_path / "small.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": ["s1", "s2"],
                "user_id": ["u1", "u2"],
                "event_type": ["page_view", "page_view"],
                "timestamp": ["2025-11-26T10:00:00Z"] * 2,
                "url": ["/a", "/b"],
            }
        ),
        path,
    )
    child = _import(path, data_dir)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert "2 rows: 2 accepted" in err, err
    assert not left.exists()
    assert (other / "held.arrow").exists()
