"""On ClickHouse (no transactions) an ingest-log entry the store refuses at insert is set aside
when nothing of its failing round can be stored, and loading goes on; a round that may be partly
stored is retried whole, never split (:meth:`avila.storage.loader.Loader._may_split`).

Real parts only: the embedded engine (chdb), real log segments, the real loader. The poison is
a ``CHECK`` constraint on a chdb table, so ClickHouse itself refuses every insert of a block
that holds the entry (``VIOLATED_CONSTRAINT``), as it would a value it cannot take."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from avila.storage import frames, quarantine
from avila.storage.base import Store
from avila.storage.clickhouse.store import ClickHouseStore
from avila.storage.clickhouse.target import ClickHouseOptions, parse_url
from avila.storage.ingest_log import IngestLogConfig
from avila.storage.log_segments import HEADER
from avila.storage.schema import EVENT_COLUMN_NAMES
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.industry40.test_i40_mqtt import wait_for
from tests.ingest.test_loader_quarantine import (
    BATCHES,
    _good_entries,
    _good_ids,
    _load,
    _write_log,
)
from tests.ingest.test_log_recovery import _events, _ingest, _open, _store

#: the events table refuses this user (one event of the poison entry has it)
POISON_USER = "poison"
NO_POISON = f"ALTER TABLE events ADD CONSTRAINT no_poison CHECK user_id != '{POISON_USER}'"
#: the telemetry table refuses this device
BAD_DEVICE = "bad-device"
NO_BAD_DEVICE = (
    f"ALTER TABLE telemetry ADD CONSTRAINT no_bad_device CHECK device_id != '{BAD_DEVICE}'"
)


def _with_poison(entry: bytes) -> bytes:
    """The same events, one of them by the user the events table refuses (validation takes it:
    any string is a user id)."""
    columns = frames.decode_events(entry)
    columns["user_id"][1] = POISON_USER
    return frames.encode_events(columns)


def _telemetry_entry(device: str) -> bytes:
    """A telemetry entry as the ingest path logs it: two readings of one request."""
    from avila.industry40.telemetry import Reading, build_rows

    at = datetime(2026, 1, 15, 10, tzinfo=UTC)
    readings = [
        (0, Reading(device_id=device, metrics={"temp": 20.5}, timestamp=at)),
        (1, Reading(device_id=device, metrics={"temp": 21.0}, timestamp=at + timedelta(seconds=1))),
    ]
    rows, rejected = build_rows("default", readings, now=at + timedelta(minutes=1))
    assert not rejected
    return frames.encode_telemetry(rows.table, None)


def _end(entries: list[bytes]) -> int:
    return sum(HEADER.size + len(e) for e in entries)


def _alter(db: Path, *statements: str) -> None:
    store = _store(db, "chdb")
    for sql in statements:
        store.execute(sql)
    store.close()


def _ids(store: Store) -> list[str]:
    return [r[0] for r in store.query("SELECT event_id FROM events")]


def _failing(store: Store, failures: int) -> None:
    """Wait until the store's loader has failed ``failures`` times (past the split's tries)."""
    loader = store._loader  # type: ignore[attr-defined]
    assert loader is not None
    wait_for(lambda: loader.failures >= failures or None, timeout=60)


def test_a_poison_entry_in_a_round_is_set_aside_and_every_good_event_loads_once(
    tmp_path: Path,
) -> None:
    """The events table refuses one entry of a round of twelve: the round fails at its first
    insert every time (nothing of it stored), so it is split; the poison entry is set aside, the
    eleven others load once each, the position passes it, and later entries keep loading."""
    good = _good_entries(tmp_path)
    poison = _with_poison(good[5])
    entries = [*good[:5], poison, *good[6:]]
    log_dir, db = tmp_path / "log", tmp_path / "s"
    _write_log(log_dir, entries)
    _alter(db, NO_POISON)

    store = _open(db, log_dir, "chdb")
    _load(store, timeout=60)  # (the code before this change retried the round for ever)
    assert store._loader is not None
    assert store._loader.quarantined == 1
    assert store.log_position() == _end(entries) and store.pending_log_round() == 0
    (kept,) = quarantine.entries(log_dir)
    assert kept["payload"] == poison
    assert (kept["start"], kept["end"]) == (_end(entries[:5]), _end(entries[:6]))
    assert "no_poison" in str(kept["error"]) and "NothingStored" in str(kept["error"])
    stored = _ids(store)
    assert len(stored) == len(set(stored))
    assert set(stored) == _good_ids(range(BATCHES)) - _good_ids(range(5, 6))

    # later entries keep loading (through the real ingest service, into the same log)
    assert _ingest(store, [_events("later", 7)], close=False) == [7]
    assert store.load_progress.wait_loaded(store.load_progress.durable, 60)
    store.close()

    # a restart sets nothing aside twice and loads nothing twice
    again = _open(db, log_dir, "chdb")
    _load(again, timeout=60)
    stored = _ids(again)
    again.close()
    assert len(stored) == len(set(stored))
    assert set(stored) == (
        _good_ids(range(BATCHES)) - _good_ids(range(5, 6)) | {f"later-{i}" for i in range(7)}
    )
    assert quarantine.count(log_dir) == 1


def test_a_round_whose_first_insert_went_in_is_retried_whole_not_split(tmp_path: Path) -> None:
    """The round's events go in, its telemetry is refused: the round may be partly stored (it
    is), so it is never split (its entries would go in again under other deduplication tokens);
    retried whole until the telemetry table takes it, it is stored once."""
    good = _good_entries(tmp_path)
    bad = _telemetry_entry(BAD_DEVICE)
    entries = [*good[:6], bad, *good[6:]]
    log_dir, db = tmp_path / "log", tmp_path / "s"
    _write_log(log_dir, entries)
    _alter(db, NO_BAD_DEVICE)

    store = _open(db, log_dir, "chdb")
    store.open_ingest_log()
    _failing(store, quarantine.ROUND_TRIES + 2)
    assert quarantine.count(log_dir) == 0
    assert store.log_position() == 0 and store.pending_log_round() == _end(entries)
    stored = _ids(store)  # the events are in (the first insert of every try), once
    assert sorted(stored) == sorted(_good_ids(range(BATCHES)))

    store.execute("ALTER TABLE telemetry DROP CONSTRAINT no_bad_device")
    assert store.load_progress.wait_loaded(store.load_progress.durable, 60)
    assert store._loader is not None and store._loader.quarantined == 0
    stored = _ids(store)
    readings = store.query("SELECT count() FROM telemetry WHERE device_id = ?", [BAD_DEVICE])
    assert store.log_position() == _end(entries) and store.pending_log_round() == 0
    store.close()
    assert len(stored) == len(set(stored))
    assert set(stored) == _good_ids(range(BATCHES))
    assert readings == [(2,)]
    assert quarantine.count(log_dir) == 0


class StopsWithoutDraining(ClickHouseStore):
    """Stops while its round keeps failing, without waiting for the log to drain."""

    def _close_ingest_log(self, timeout: float = 0.5) -> None:
        super()._close_ingest_log(timeout)


def _chdb(cls: type[ClickHouseStore], db: Path, log_dir: Path) -> ClickHouseStore:
    """``cls`` on the chdb directory of ``db`` with the log in ``log_dir`` (as _open)."""
    store = cls(parse_url(f"chdb://{db.with_suffix('.chdb')}"), ClickHouseOptions())
    store.ingest_log_config = IngestLogConfig(log_dir)
    return store


def test_a_round_pending_at_a_restart_is_replayed_whole_not_split(tmp_path: Path) -> None:
    """A round was partly stored (its events in, its telemetry refused) when the process
    stopped. After the restart an entry of it is refused at the first insert too, every time:
    the store cannot tell what the process before stored, so the round is replayed whole (the
    same end, the same tokens), never split; once the tables take it, it is stored once."""
    good = _good_entries(tmp_path)
    entries = [*good[:6], _telemetry_entry(BAD_DEVICE), *good[6:]]
    log_dir, db = tmp_path / "log", tmp_path / "s"
    _write_log(log_dir, entries)
    _alter(db, NO_BAD_DEVICE)

    first = _chdb(StopsWithoutDraining, db, log_dir)
    first.open_ingest_log()
    _failing(first, 2)
    first.close()

    # after the stop, the events table refuses an event of the round too (whose events the
    # stopped process stored: ClickHouse checks a constraint only at insert)
    _alter(db, "ALTER TABLE events ADD CONSTRAINT no_g8 CHECK event_id != 'g8-2'")
    again = _open(db, log_dir, "chdb")
    again.open_ingest_log()
    assert again.pending_log_round() == _end(entries)  # (of this log: known once it is open)
    _failing(again, quarantine.ROUND_TRIES + 2)
    assert quarantine.count(log_dir) == 0
    assert again.log_position() == 0 and again.pending_log_round() == _end(entries)
    assert sorted(_ids(again)) == sorted(_good_ids(range(BATCHES)))

    again.execute("ALTER TABLE events DROP CONSTRAINT no_g8")
    again.execute("ALTER TABLE telemetry DROP CONSTRAINT no_bad_device")
    assert again.load_progress.wait_loaded(again.load_progress.durable, 60)
    stored = _ids(again)
    assert again.log_position() == _end(entries) and again.pending_log_round() == 0
    again.close()
    assert len(stored) == len(set(stored))
    assert set(stored) == _good_ids(range(BATCHES))
    assert quarantine.count(log_dir) == 0


class SmallBlocksByDefault(ClickHouseStore):
    """A server whose profile cuts inserts into blocks of at most ten rows' worth (Arrow
    batches are taken whole): an insert of several record batches would go in batch by batch,
    a refused later one leaving the earlier ones stored."""

    def _session_settings(self) -> dict[str, Any]:
        return {
            **super()._session_settings(),
            "min_insert_block_size_rows": 10,
            "min_insert_block_size_bytes": 0,
        }


def _bulk_entry(entry: int, size: int, user: str = "u") -> bytes:
    columns: dict[str, list[Any]] = {n: [None] * size for n in EVENT_COLUMN_NAMES}
    columns["project_id"] = ["p"] * size
    columns["event_id"] = [f"b{entry}-{i}" for i in range(size)]
    columns["user_id"] = [user] * size
    columns["ts"] = [1_768_471_200_000_000 + i for i in range(size)]
    columns["received_at"] = [1_768_471_200_000_000] * size
    columns["event_type"] = ["page_view"] * size
    return frames.encode_events(columns)


def test_a_round_of_several_arrow_batches_goes_in_as_one_block(tmp_path: Path) -> None:
    """A round of 50,000 events is three Arrow record batches (round_reading.ARROW_CHUNK_ROWS);
    the refused event is in the third. The loader's insert is one block whatever the server's
    block settings, so the refusal stores nothing (else the first batch would be stored, and
    loaded again by the split: duplicates)."""
    entries = [_bulk_entry(e, 1000) for e in range(49)] + [_bulk_entry(49, 1000, POISON_USER)]
    log_dir, db = tmp_path / "log", tmp_path / "s"
    _write_log(log_dir, entries)
    _alter(db, NO_POISON)

    store = _chdb(SmallBlocksByDefault, db, log_dir)
    store.ingest_log_config = IngestLogConfig(log_dir, max_load_rows=60_000)  # one round
    _load(store, timeout=90)
    stored = _ids(store)
    store.close()
    assert len(stored) == len(set(stored)) == 49_000
    assert quarantine.count(log_dir) == 1


def test_a_server_on_clickhouse_reports_the_set_aside_entry(tmp_path: Path) -> None:
    """``avila serve`` on chdb: the entry is set aside, /health and /metrics count it (as on
    DuckDB), and the good events are there."""
    good = _good_entries(tmp_path)
    log_dir, db = tmp_path / "log", tmp_path / "store.chdb"
    _write_log(log_dir, [*good[:2], _with_poison(good[2]), *good[3:]])
    store = ClickHouseStore(parse_url(f"chdb://{db}"), ClickHouseOptions())
    store.execute(NO_POISON)
    store.close()
    env = {
        "API_KEYS": TEST_KEY,
        "AVILA_STORAGE_URL": f"chdb://{db}",
        "AVILA_INGEST_LOG_DIR": str(log_dir),
    }
    with ServerProcess(tmp_path / "data", env=env) as server:
        client = httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY})

        def loaded() -> dict[str, Any] | None:
            backlog: dict[str, Any] = client.get("/health").json()["ingest_log"]
            return backlog if backlog["bytes"] == 0 and backlog["quarantined"] else None

        backlog = wait_for(loaded, timeout=60)
        assert backlog["quarantined"] == 1
        assert "\navila_ingest_quarantined_entries 1.0\n" in client.get("/metrics").text
        client.close()
    store = ClickHouseStore(parse_url(f"chdb://{db}"), ClickHouseOptions())
    stored = _ids(store)
    store.close()
    assert len(stored) == len(set(stored))
    assert set(stored) == _good_ids(range(BATCHES)) - _good_ids(range(2, 3))
