"""An ingest-log entry the store refuses for good is set aside and loading goes on
(:mod:`avila.storage.quarantine`); a store that cannot commit for a while sets nothing aside.

The logs here are real segment files: entries written by the real ingest service, with bad ones
spliced in between them as the log's own framing writes them (the loader never validates again,
so a value validation let through, or an entry of a newer version, reaches it exactly so)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from avila.storage import frames, quarantine
from avila.storage.base import Store
from avila.storage.log_segments import HEADER, read_frames, segment_path
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.industry40.test_i40_mqtt import wait_for
from tests.ingest.small_filesystems import fill, mounted_tmpfs
from tests.ingest.test_log_recovery import (
    _events,
    _ingest,
    _open,
    _position,
    _stored_ids,
    backend,  # noqa: F401  (the fixture: DuckDB and chdb)
)

BATCHES = 12
PER_BATCH = 5


#: The entries of the first _good_entries call of this process: every call logs the same
#: events through the same service, and each test writes them into a log of its own.
_GOOD: list[bytes] = []


def _good_entries(tmp: Path) -> list[bytes]:
    """BATCHES entries of PER_BATCH events each, as the ingest service logs them (logged by a
    real service once per process, in ``tmp`` of the first caller; a fresh list each call)."""
    if not _GOOD:
        source = _open(tmp / "source.duckdb", tmp / "source-log", "duckdb", segment_bytes=1 << 30)
        _ingest(source, [_events(f"g{b}", PER_BATCH) for b in range(BATCHES)])
        entries = [payload for _, payload in read_frames(tmp / "source-log", 0)]
        assert len(entries) == BATCHES
        _GOOD.extend(entries)
    return list(_GOOD)


def _without_user(entry: bytes) -> bytes:
    """The same events with one user id missing: validation never lets that through, the
    events table holds user ids NOT NULL (DuckDB refuses the whole insert)."""
    columns = frames.decode_events(entry)
    columns["user_id"][1] = None
    return frames.encode_events(columns)


def _write_log(log_dir: Path, entries: list[bytes]) -> None:
    log_dir.mkdir()
    with open(segment_path(log_dir, 0), "wb") as f:
        for payload in entries:
            f.write(HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        f.flush()
        os.fsync(f.fileno())


def _load(store: Store, timeout: float = 120) -> None:
    """Open the store's log (recovery, loader) and wait until all of it is loaded."""
    store.open_ingest_log()
    progress = store.load_progress
    assert progress.wait_loaded(progress.durable, timeout), store.ingest_log.backlog()  # type: ignore[union-attr]


def _good_ids(batches: range) -> set[str]:
    return {f"g{b}-{i}" for b in batches for i in range(PER_BATCH)}


@pytest.mark.parametrize(
    ("newer", "error"),
    [
        (b"\x63" + b"an entry kind this version does not know", "unknown kind 99"),
        # events, but not msgpack (0xc1 is never used): recovery and the loader cannot read it
        (b"\x01\xc1" + b"events this version cannot read", "FormatError"),
    ],
    ids=["unknown-kind", "unreadable"],
)
def test_an_entry_that_cannot_be_read_is_set_aside_and_the_rest_loads_once(
    tmp_path: Path,
    backend: str,  # noqa: F811
    newer: bytes,
    error: str,
) -> None:
    good = _good_entries(tmp_path)
    entries = [*good[:5], newer, *good[5:]]
    log_dir, db = tmp_path / "log", tmp_path / "s.duckdb"
    _write_log(log_dir, entries)
    store = _open(db, log_dir, backend)
    _load(store)
    assert store._loader is not None
    assert store._loader.quarantined == 1
    store.close()

    stored = _stored_ids(db, backend)
    assert len(stored) == len(set(stored))
    assert set(stored) == _good_ids(range(BATCHES))
    (kept,) = quarantine.entries(log_dir)
    assert kept["payload"] == newer  # byte for byte: it can be looked at and loaded again
    assert error in str(kept["error"])
    assert kept["end"] == kept["start"] + HEADER.size + len(newer)  # type: ignore[operator]
    assert quarantine.count(log_dir) == 1
    assert _position(db, backend) == sum(HEADER.size + len(e) for e in entries)


def test_entries_the_store_refuses_are_set_aside_and_their_neighbours_load(
    tmp_path: Path,
) -> None:
    """Two refused entries in one round (DuckDB: the NOT NULL user id): the round is split until
    each stands alone; the ten good entries around them load, each once."""
    good = _good_entries(tmp_path)
    refused = [_without_user(good[3]), _without_user(good[8])]
    entries = [*good[:3], refused[0], *good[4:8], refused[1], *good[9:]]
    log_dir, db = tmp_path / "log", tmp_path / "s.duckdb"
    _write_log(log_dir, entries)
    store = _open(db, log_dir, "duckdb")
    _load(store)
    store.close()

    stored = _stored_ids(db, "duckdb")
    assert len(stored) == len(set(stored))
    assert set(stored) == _good_ids(range(BATCHES)) - _good_ids(range(3, 4)) - _good_ids(
        range(8, 9)
    )
    kept = quarantine.entries(log_dir)
    assert [k["payload"] for k in kept] == refused
    assert all("NOT NULL" in str(k["error"]) for k in kept)

    # a restart sets nothing aside twice and loads nothing twice
    again = _open(db, log_dir, "duckdb")
    _load(again)
    again.close()
    assert sorted(_stored_ids(db, "duckdb")) == sorted(stored)
    assert quarantine.count(log_dir) == 2


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "storefs", "24m") as mount:
        yield mount


def test_a_store_that_cannot_commit_for_a_while_sets_nothing_aside(
    tmp_path: Path, small_fs: Path
) -> None:
    """The store's disk is full for longer than the round's tries (so the round is split down to
    single entries): every skip fails too, nothing is set aside, and once space returns every
    entry loads, once."""
    good = _good_entries(tmp_path)
    log_dir, db = tmp_path / "log", small_fs / "s.duckdb"
    store = _open(db, log_dir, "duckdb")
    store.open_ingest_log()  # the store file and its tables exist before the disk fills
    assert store.load_progress.wait_loaded(store.load_progress.durable, 30)
    store.close()
    shutil.rmtree(log_dir)  # (it held nothing)
    _write_log(log_dir, good)

    filler = fill(small_fs)
    store = _open(db, log_dir, "duckdb")

    def free_after_splits() -> None:
        """Space returns once the round's tries and two loads entry by entry (each split down
        to a single entry, whose tries fail too) have failed (at the latest after 60 s)."""
        with contextlib.suppress(AssertionError):
            wait_for(
                lambda: (
                    store._loader is not None
                    and store._loader.failures >= quarantine.ROUND_TRIES + 2
                ),
                timeout=60,
            )
        filler.unlink()

    freed = threading.Thread(target=free_after_splits)
    freed.start()
    try:
        _load(store)
    finally:
        freed.join()
    assert store._loader is not None
    failures = store._loader.failures
    store.close()
    assert failures >= quarantine.ROUND_TRIES  # the full disk was felt
    assert quarantine.count(log_dir) == 0
    assert not list(quarantine.directory(log_dir).glob("*"))  # not even a pending one
    stored = _stored_ids(db, "duckdb")
    assert sorted(stored) == sorted(_good_ids(range(BATCHES)))


def test_a_server_reports_set_aside_entries_in_health_and_metrics(tmp_path: Path) -> None:
    """The server's loader (in the DuckDB store process) sets the entry aside at its start;
    /health and /metrics count it, and the good events are there."""
    good = _good_entries(tmp_path)
    log_dir = tmp_path / "log"
    _write_log(log_dir, [*good[:2], b"\x63newer", *good[2:]])
    env = {"API_KEYS": TEST_KEY, "AVILA_INGEST_LOG_DIR": str(log_dir)}
    with ServerProcess(tmp_path / "data", env=env) as server:
        client = httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY})

        def loaded() -> dict[str, Any] | None:
            backlog: dict[str, Any] = client.get("/health").json()["ingest_log"]
            return backlog if backlog["bytes"] == 0 and backlog["quarantined"] else None

        backlog = wait_for(loaded, timeout=60)
        assert backlog["quarantined"] == 1
        metrics = client.get("/metrics").text
        assert "\navila_ingest_quarantined_entries 1.0\n" in metrics
        client.close()
    assert set(_stored_ids(tmp_path / "data" / "avila.duckdb", "duckdb")) == _good_ids(
        range(BATCHES)
    )


def test_past_the_limit_entries_are_retried_not_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many refusals in a row look more like a store in trouble than like bad entries: past
    quarantine.LIMIT per window the loader retries; raised again, it goes on."""
    monkeypatch.setattr(quarantine, "LIMIT", 1)
    good = _good_entries(tmp_path)
    refused = [_without_user(good[2]), _without_user(good[6])]
    log_dir, db = tmp_path / "log", tmp_path / "s.duckdb"
    _write_log(log_dir, [*good[:2], refused[0], *good[3:6], refused[1], *good[7:]])
    store = _open(db, log_dir, "duckdb")
    store.open_ingest_log()
    loader = store._loader
    assert loader is not None
    wait_for(lambda: loader.quarantined == 1 or None, timeout=60)
    failures = loader.failures
    # the second refusal is retried (each retry splits the round again), never set aside
    wait_for(lambda: loader.failures >= failures + 3 or None, timeout=60)
    assert loader.quarantined == 1 and quarantine.count(log_dir) == 1
    monkeypatch.setattr(quarantine, "LIMIT", 100)
    assert store.load_progress.wait_loaded(store.load_progress.durable, 60)
    store.close()
    assert quarantine.count(log_dir) == 2
    stored = _stored_ids(db, "duckdb")
    assert sorted(stored) == sorted(_good_ids(range(BATCHES)) - _good_ids([2, 6]))


#: What each server of the crash test has logged when it is killed (fixed before the first run):
#: a failed commit of the round (before the split), then the first entry set aside (mid-split,
#: the second refused entry not reached yet).
KILL_AT = ("ingest loader commit failed", "ingest log entry set aside")


def test_sigkill_of_server_and_store_process_while_splitting_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """The server and its store process are killed (SIGKILL, both) at each moment of KILL_AT
    while the loader splits a round with two refused entries; after the last restart every good
    event is stored once and each refused entry is set aside once."""
    good = _good_entries(tmp_path)
    refused = [_without_user(good[3]), _without_user(good[8])]
    log_dir, data = tmp_path / "log", tmp_path / "data"
    _write_log(log_dir, [*good[:3], refused[0], *good[4:8], refused[1], *good[9:]])
    env = {"API_KEYS": TEST_KEY, "AVILA_INGEST_LOG_DIR": str(log_dir)}
    for message in KILL_AT:
        server = ServerProcess(data, env=env)
        starting = threading.Thread(target=_start_until_killed, args=(server,))
        starting.start()
        wait_for(lambda: message in server.log() or None, timeout=60)  # noqa: B023
        processes = server.children()
        server.kill()
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        starting.join()
        wait_for(lambda: not any(_alive(p) for p in processes) or None, timeout=30)  # noqa: B023
    assert quarantine.count(log_dir) <= 1  # the second refused entry was not reached
    with ServerProcess(data, env=env) as server:
        client = httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY})
        wait_for(lambda: client.get("/health").json()["ingest_log"]["bytes"] == 0 or None, 60)
        client.close()
    stored = _stored_ids(data / "avila.duckdb", "duckdb")
    assert len(stored) == len(set(stored))
    assert set(stored) == _good_ids(range(BATCHES)) - _good_ids([3, 8])
    assert sorted(k["payload"] for k in quarantine.entries(log_dir)) == sorted(refused)


def _start_until_killed(server: ServerProcess) -> None:
    with contextlib.suppress(RuntimeError):  # "server exited": killed before it was healthy
        server.start()


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text().lower()
    except OSError:
        return False


def test_a_round_split_across_a_torn_tail_loads_every_entry_once(tmp_path: Path) -> None:
    """A torn tail ends the first segment (a crash mid-write, never acknowledged); the round
    that fails spans it. Its split ranges follow each other across the torn bytes."""
    good = _good_entries(tmp_path)
    log_dir, db = tmp_path / "log", tmp_path / "s.duckdb"
    _write_log(log_dir, good[:3])
    first = segment_path(log_dir, 0)
    torn = HEADER.pack(500, 0) + b"half a frame"
    with open(first, "ab") as f:
        f.write(torn)
    second = first.stat().st_size
    refused = _without_user(good[3])
    with open(segment_path(log_dir, second), "wb") as f:
        for payload in [refused, *good[4:]]:
            f.write(HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
    store = _open(db, log_dir, "duckdb")
    _load(store)
    store.close()
    assert sorted(_stored_ids(db, "duckdb")) == sorted(_good_ids(range(BATCHES)) - _good_ids([3]))
    (kept,) = quarantine.entries(log_dir)
    assert kept["payload"] == refused


@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),
        duckdb.IOException('Could not write file "s.duckdb.wal": No space left on device'),
        MemoryError(),
        RuntimeError("Out of Memory Error: could not allocate block"),
    ],
)
def test_an_entry_failing_on_the_stores_side_is_never_set_aside(
    tmp_path: Path, error: BaseException
) -> None:
    """However often it fails: a disk that frees space between an entry's last try and its
    skip would otherwise let the skip commit, setting a good entry aside (CI saw it once)."""
    good = _good_entries(tmp_path)[:2]
    log_dir = tmp_path / "log"
    _write_log(log_dir, good)
    entries = quarantine.entries_between(log_dir, 0, 2 * HEADER.size + sum(map(len, good)))
    skipped: list[tuple[int, int]] = []

    def load(start: int, end: int) -> None:
        raise error

    with pytest.raises(RuntimeError, match="store's side"):
        quarantine.isolate(entries, load, lambda s, e: skipped.append((s, e)), log_dir)
    assert skipped == [] and quarantine.count(log_dir) == 0
