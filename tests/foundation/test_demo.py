"""avila demo: deterministic, realistic, idempotent, written through the ingestion path."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import msgspec

from avila.demo.ecommerce import generate_user_events

END = datetime(2026, 3, 1, tzinfo=UTC)


def _events(seed: int) -> list[dict]:
    return [
        msgspec.json.decode(raw)
        for batch in generate_user_events(seed, 120, 30, END)
        for raw in batch
    ]


def test_same_seed_same_events_and_a_different_seed_differs() -> None:
    assert _events(7) == _events(7)
    assert _events(7) != _events(8)


def test_dataset_has_the_shapes_analytics_need() -> None:
    events = _events(3)
    types = Counter(e["event_type"]["type"] for e in events)
    # A funnel with drop-off at every step.
    assert types["ProductView"] > types["AddToCart"] > types["Checkout"] > types["Purchase"] > 0
    buyers = Counter(e["user_id"] for e in events if e["event_type"]["type"] == "Purchase")
    assert any(n >= 2 for n in buyers.values()), "no repeat buyers"
    last_seen = {}
    for e in events:
        last_seen[e["user_id"]] = max(last_seen.get(e["user_id"], ""), e["timestamp"])
    quiet = [u for u, t in last_seen.items() if t < "2026-02-15"]
    assert quiet, "no churners (users silent for the last two weeks)"
    assert all(e["timestamp"] < "2026-03-01T00:00:00" for e in events)
    assert len({e["event_id"] for e in events}) == len(events)


def test_cli_writes_through_ingestion_and_is_idempotent(tmp_path: Path) -> None:
    env = {"AVILA_DATA_DIR": str(tmp_path), "PATH": ""}
    cmd = [
        sys.executable,
        "-m",
        "avila.cli",
        "demo",
        "--users",
        "40",
        "--days",
        "10",
        "--seed",
        "5",
        "--end",
        "2026-03-01",
    ]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "events stored" in first.stderr and "0 rejected" in first.stderr
    with duckdb.connect(str(tmp_path / "avila.duckdb"), read_only=True) as conn:
        stored = conn.execute(
            "SELECT count(*), count(DISTINCT event_id), min(project_id) FROM events"
        ).fetchone()
    assert stored is not None and stored[0] == stored[1] > 0 and stored[2] == "default"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert f"0 events stored, {stored[0]} already present" in again.stderr
    skipped = subprocess.run(
        [*cmd, "--if-empty"], env=env, capture_output=True, text=True, check=True
    )
    assert "already has events" in skipped.stderr
