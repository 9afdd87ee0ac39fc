"""``avila quarantine list | requeue`` on a real DuckDB store and its real ingest log: entries
set aside by the loader are listed, appended again, loaded when they can be, set aside again
when they cannot, and never loaded twice."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from avila.cli import main
from avila.storage import quarantine
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.ingest_log import HEADER
from tests.ingest.test_loader_quarantine import _good_entries, _without_user, _write_log

UNKNOWN = b"\x63" + b"an entry kind this version does not know"


def _stored_ids(db: Path) -> list[str]:
    store = DuckDBStore(db, read_only=True)
    try:
        return [r[0] for r in store.query("SELECT event_id FROM events")]
    finally:
        store.close()


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
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AVILA_STORAGE_URL", raising=False)
    monkeypatch.delenv("AVILA_INGEST_LOG_DIR", raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("AVILA_DATA_DIR", str(data))
    data.mkdir()
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
