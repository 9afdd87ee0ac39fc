"""``avila quarantine list | requeue`` on a real DuckDB store and its real ingest log: entries
set aside by the loader are listed, appended again, loaded when they can be, set aside again
when they cannot, and never loaded twice."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from avila.cli import main
from avila.storage import frames, quarantine
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.log_segments import HEADER
from tests.ingest.test_loader_quarantine import _good_entries, _without_user, _write_log

UNKNOWN = b"\x63" + b"an entry kind this version does not know"


def _stored_ids(db: Path) -> list[str]:
    store = DuckDBStore(db, read_only=True)
    try:
        return [r[0] for r in store.query("SELECT event_id FROM events")]
    finally:
        store.close()


def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory the CLI finds through the environment, as `avila serve` would."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AVILA_STORAGE_URL", raising=False)
    monkeypatch.delenv("AVILA_INGEST_LOG_DIR", raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("AVILA_DATA_DIR", str(data))
    data.mkdir()
    return data


def _load(monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    """Open the store as the server would (its log beside it) and load all of the log."""
    from avila.config import Settings
    from avila.storage.ingest_log import config_from_settings

    store = DuckDBStore(data / "avila.duckdb")
    store.ingest_log_config = config_from_settings(Settings.from_env())
    store.open_ingest_log()
    assert store.load_progress.wait_loaded(store.load_progress.durable, 120)
    store.close()


def test_set_aside_entries_are_listed_and_requeued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data_dir(tmp_path, monkeypatch)
    log_dir = data / "avila.ingest-log"
    good = _good_entries(tmp_path)
    refused = _without_user(good[1])
    _write_log(log_dir, [good[0], refused, UNKNOWN, *good[2:10]])
    _load(monkeypatch, data)
    assert quarantine.count(log_dir) == 2
    # An entry set aside during an outage that has passed (good events: it loads now), in the
    # file format the loader writes (docs/ingestion.md).
    outage = {
        "start": 1,
        "end": 1 + HEADER.size + len(good[10]),
        "kind": 1,
        "error": "IOException: No space left on device",
        "quarantined_at": "2026-12-01T00:00:00+00:00",
        "payload_base64": base64.b64encode(good[10]).decode(),
    }
    (quarantine.directory(log_dir) / f"{1:020d}.json").write_text(json.dumps(outage))

    assert main(["quarantine", "list"]) == 0
    listed = capsys.readouterr().out
    assert "3 entries set aside" in listed
    assert "5 events" in listed and "unknown kind 99" in listed and "NOT NULL" in listed

    assert main(["quarantine", "requeue"]) == 1  # two are refused again
    out = capsys.readouterr().out
    assert "1 of 3 entries loaded" in out
    assert out.count("set aside again") == 2
    stored = _stored_ids(data / "avila.duckdb")
    assert len(stored) == len(set(stored))
    expected = {f"g{b}-{i}" for b in [0, *range(2, 11)] for i in range(5)}
    assert set(stored) == expected
    kept = quarantine.entries(log_dir)
    assert sorted(k["payload"] for k in kept) == sorted([refused, UNKNOWN])
    assert all(k["start"] > 1 for k in kept)  # new positions: the old files are gone

    # one of them again, by position; the events loaded above are not loaded twice
    unknown_at = next(k["start"] for k in kept if k["payload"] == UNKNOWN)
    assert main(["quarantine", "requeue", "--start", str(unknown_at)]) == 1
    assert "0 of 1 entries loaded" in capsys.readouterr().out
    assert quarantine.count(log_dir) == 2
    assert sorted(_stored_ids(data / "avila.duckdb")) == sorted(stored)

    assert main(["quarantine", "requeue", "--start", "12345"]) == 2  # nothing there
    assert "no entries set aside at those positions" in capsys.readouterr().err


def _telemetry_entry(device: str, at: datetime) -> bytes:
    """A telemetry entry as the ingest path logs it: two readings of one request."""
    from avila.industry40.telemetry import Reading, build_rows

    readings = [
        (0, Reading(device_id=device, metrics={"temp": 20.5, "rpm": 1e300}, timestamp=at)),
        (1, Reading(device_id=device, metrics={"temp": -0.0}, timestamp=at + timedelta(seconds=1))),
    ]
    rows, rejected = build_rows("default", readings, now=at + timedelta(minutes=1))
    assert not rejected
    return frames.encode_telemetry(rows.table, None)


def _quarantine_file(log_dir: Path, start: int, payload: bytes) -> None:
    """A set-aside entry in the file format the loader writes (docs/ingestion.md)."""
    record = {
        "start": start,
        "end": start + HEADER.size + len(payload),
        "kind": payload[0],
        "error": "IOException: No space left on device",
        "quarantined_at": "2026-12-01T00:00:00+00:00",
        "payload_base64": base64.b64encode(payload).decode(),
    }
    place = quarantine.directory(log_dir)
    place.mkdir(parents=True, exist_ok=True)
    (place / f"{start:020d}.json").write_text(json.dumps(record))


def test_a_requeue_cut_short_by_a_crash_stores_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash after a copy's append, before its old file went: the copy loaded (events and
    readings already stored) or was set aside again (a second file with the same bytes).
    Requeueing again stores each row once."""
    data = _data_dir(tmp_path, monkeypatch)
    log_dir = data / "avila.ingest-log"
    good = _good_entries(tmp_path)
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    loaded_readings, new_readings = _telemetry_entry("m-1", at), _telemetry_entry("m-2", at)
    _write_log(log_dir, [*good[:10], loaded_readings])
    _load(monkeypatch, data)
    _quarantine_file(log_dir, 1, good[3])  # its copy loaded before the crash
    _quarantine_file(log_dir, 2, loaded_readings)
    _quarantine_file(log_dir, 3, good[10])  # its copy was set aside again ...
    _quarantine_file(log_dir, 4, good[10])  # ... at a new position
    _quarantine_file(log_dir, 5, new_readings)

    assert main(["quarantine", "requeue"]) == 0
    out = capsys.readouterr().out
    assert out.count("already stored") == 2
    assert "4: the same bytes as the entry at 3" in out
    assert "5 of 5 entries loaded" in out
    assert quarantine.count(log_dir) == 0
    stored = _stored_ids(data / "avila.duckdb")
    assert sorted(stored) == sorted({f"g{b}-{i}" for b in range(11) for i in range(5)})
    store = DuckDBStore(data / "avila.duckdb", read_only=True)
    try:
        readings = store.query("SELECT device_id, metric, value FROM telemetry ORDER BY ALL")
    finally:
        store.close()
    assert readings == [
        (device, metric, value)
        for device in ("m-1", "m-2")
        for metric, value in (("rpm", 1e300), ("temp", -0.0), ("temp", 20.5))
    ]


def test_an_entry_partly_stored_is_left_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data_dir(tmp_path, monkeypatch)
    log_dir = data / "avila.ingest-log"
    good = _good_entries(tmp_path)
    _write_log(log_dir, good[:2])
    _load(monkeypatch, data)
    columns = frames.decode_events(good[1])  # two of its events stored, three new
    columns = {k: v[:2] for k, v in columns.items()}
    mixed = frames.decode_events(good[2])
    both = frames.encode_events({k: columns[k] + mixed[k][:3] for k in columns})
    _quarantine_file(log_dir, 7, both)

    assert main(["quarantine", "requeue"]) == 1
    assert "7: 2 of its 5 rows are already stored: left set aside" in capsys.readouterr().out
    assert quarantine.count(log_dir) == 1
    assert len(_stored_ids(data / "avila.duckdb")) == 10
