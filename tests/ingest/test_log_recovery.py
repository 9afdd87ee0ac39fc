"""The ingest log and its loader against a real store and real segment files: torn frames, a
crash between the store commit and the log trim, segment rolling and trimming. Every test that
takes a store runs on DuckDB and on ClickHouse (embedded chdb)."""

from __future__ import annotations

import asyncio
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from avila.ingest.service import IngestService
from avila.storage.base import Store
from avila.storage.clickhouse.store import ClickHouseStore
from avila.storage.clickhouse.target import ClickHouseOptions, parse_url
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.ingest_log import IngestLogConfig
from avila.storage.log_segments import HEADER, read_frames, segment_bases

BACKENDS = ["duckdb", "chdb"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _store(path: Path, backend: str, *, read_only: bool = False) -> Store:
    if backend == "chdb":
        target = parse_url(f"chdb://{path.with_suffix('.chdb')}")
        return ClickHouseStore(target, ClickHouseOptions(), migrate=not read_only)
    return DuckDBStore(path, read_only=read_only)


def _events(prefix: str, n: int) -> list[bytes]:
    return [
        (
            f'{{"event_id":"{prefix}-{i}","user_id":"u{i % 7}","timestamp":"2026-01-15T10:00:00Z",'
            f'"event_type":{{"type":"PageView","data":{{"url":"/p/{i}"}}}}}}'
        ).encode()
        for i in range(n)
    ]


def _open(path: Path, log_dir: Path, backend: str, segment_bytes: int = 64 << 20) -> Store:
    store = _store(path, backend)
    store.ingest_log_config = IngestLogConfig(log_dir, segment_bytes=segment_bytes)
    return store


def _ingest(store: Store, batches: list[list[bytes]], *, close: bool = True) -> list[int]:
    async def run() -> list[int]:
        service = IngestService(store)
        await service.start()
        accepted = []
        for batch in batches:
            accepted.append((await service.ingest(batch, "p")).accepted)
        await service.close()
        return accepted

    accepted = asyncio.run(run())
    if close:
        store.close()
    return accepted


def _stored_ids(path: Path, backend: str) -> list[str]:
    store = _store(path, backend, read_only=True)
    try:
        return [r[0] for r in store.query("SELECT event_id FROM events")]
    finally:
        store.close()


def _position(path: Path, backend: str) -> int:
    store = _store(path, backend, read_only=True)
    try:
        return int(store.query("SELECT position FROM ingest_position")[0][0])
    finally:
        store.close()


def test_every_accepted_event_is_loaded_once_and_loaded_segments_are_deleted(
    tmp_path: Path, backend: str
) -> None:
    db, log_dir = tmp_path / "s.duckdb", tmp_path / "log"
    store = _open(db, log_dir, backend, segment_bytes=8192)
    accepted = _ingest(store, [_events(f"b{b}", 40) for b in range(30)])
    assert accepted == [40] * 30
    stored = _stored_ids(db, backend)
    assert len(stored) == 1200 == len(set(stored))
    bases = segment_bases(log_dir)
    # 30 frames of ~5 KB each roll the 8 KB segments many times; all but the newest are gone
    assert len(bases) == 1
    assert _position(db, backend) >= bases[0]


def test_a_crash_between_the_store_commit_and_the_log_trim_loads_nothing_twice(
    tmp_path: Path, backend: str
) -> None:
    db, log_dir = tmp_path / "s.duckdb", tmp_path / "log"
    store = _open(db, log_dir, backend)
    _ingest(store, [_events("first", 500)], close=False)
    # Everything is loaded (the store's position covers it) but the segment is still there:
    # the state a crash right after the loader's commit, before its trim, leaves behind.
    assert store.load_progress.wait_loaded(store.load_progress.durable, 10)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(log_dir, snapshot)
    store.close()
    shutil.rmtree(log_dir)
    shutil.copytree(snapshot, log_dir)
    loaded_position = _position(db, backend)
    assert any(end <= loaded_position for end, _ in read_frames(log_dir, 0))

    again = _open(db, log_dir, backend)
    assert _ingest(again, [_events("first", 500), _events("second", 10)]) == [0, 10]
    stored = _stored_ids(db, backend)
    assert len(stored) == 510 == len(set(stored))


def _append_raw(log_dir: Path, data: bytes) -> None:
    newest = max(log_dir.glob("*.seg"))
    with open(newest, "ab") as f:
        f.write(data)


@pytest.mark.parametrize("tear", ["half_header", "half_payload", "bad_checksum"])
def test_a_torn_tail_frame_is_dropped_and_the_log_continues(
    tmp_path: Path, tear: str, backend: str
) -> None:
    db, log_dir = tmp_path / "s.duckdb", tmp_path / "log"
    store = _open(db, log_dir, backend)
    # The store is not closed: its loader is stopped before the torn frame is written, as if
    # the process died with that frame half on disk.
    _ingest(store, [_events("ok", 100)], close=False)
    store.close()
    payload = b"\x01" + b"x" * 300
    frame = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
    if tear == "half_header":
        torn = frame[:5]
    elif tear == "half_payload":
        torn = frame[: HEADER.size + 100]
    else:
        torn = struct.pack("<II", len(payload), zlib.crc32(payload) ^ 1) + payload
    _append_raw(log_dir, torn)

    reopened = _open(db, log_dir, backend)
    assert _ingest(reopened, [_events("ok", 100), _events("after", 50)]) == [0, 50]
    assert reopened.ingest_recovery is not None
    assert reopened.ingest_recovery.torn_bytes == len(torn)
    stored = _stored_ids(db, backend)
    assert len(stored) == 150 == len(set(stored))


def test_unloaded_frames_are_replayed_at_start_and_their_ids_are_duplicates(
    tmp_path: Path, backend: str
) -> None:
    db, log_dir = tmp_path / "s.duckdb", tmp_path / "log"
    store = _open(db, log_dir, backend)
    _ingest(store, [_events("x", 300)], close=False)
    store.close()
    # Rewind the store: rows and position go back together, so the frames are again an
    # unloaded backlog, as a crash before the loader's commit leaves them.
    rewind = _store(db, backend)
    if backend == "duckdb":
        rewind.execute("DELETE FROM events")
        rewind.execute("UPDATE ingest_position SET position = 0")
    else:
        # The state before the first insert: no rows, no position, and no remembered insert
        # blocks (a DELETE would keep the deduplication log, which drops the replayed blocks).
        rewind.execute("TRUNCATE TABLE events")
        rewind.execute("TRUNCATE TABLE ingest_position")
    rewind.close()

    reopened = _open(db, log_dir, backend)

    async def retry() -> tuple[int, int]:
        service = IngestService(reopened)
        await service.start()
        # the retry is answered from the dedup index rebuilt from the unloaded log
        result = await service.ingest(_events("x", 300), "p")
        await service.close()
        return result.accepted, result.duplicates

    assert asyncio.run(retry()) == (0, 300)
    reopened.close()
    stored = _stored_ids(db, backend)
    assert len(stored) == 300 == len(set(stored))


def test_read_frames_stops_a_segment_at_a_corrupt_frame_and_moves_to_the_next(
    tmp_path: Path,
) -> None:
    def frame(body: bytes) -> bytes:
        return HEADER.pack(len(body), zlib.crc32(body)) + body

    first = frame(b"\x01a") + frame(b"\x01b")
    (tmp_path / f"{0:020d}.seg").write_bytes(first + b"\x00" * 7)
    base = len(first)
    (tmp_path / f"{base:020d}.seg").write_bytes(frame(b"\x01c"))
    got = [bytes(p) for _, p in read_frames(tmp_path, 0)]
    assert got == [b"\x01a", b"\x01b", b"\x01c"]
    # from a position inside the log, and bounded by an end position
    assert [bytes(p) for _, p in read_frames(tmp_path, HEADER.size + 2)] == [b"\x01b", b"\x01c"]
    assert [bytes(p) for _, p in read_frames(tmp_path, 0, end=base)] == [b"\x01a", b"\x01b"]


def test_a_retried_round_whose_commit_already_landed_is_not_stored_twice(
    tmp_path: Path, backend: str
) -> None:
    # The loader retries a round after any failure, including one after the COMMIT landed (a
    # failed trim, or a commit whose outcome was unclear): the recorded position skips it.
    from avila.storage.schema import EVENT_SCHEMA, columns_to_arrow

    store = _store(tmp_path / "retry.duckdb", backend)
    columns: dict[str, list[object]] = {f.name: [None] * 5 for f in EVENT_SCHEMA}
    columns.update(
        project_id=["p"] * 5,
        event_id=[f"e{i}" for i in range(5)],
        user_id=[f"u{i}" for i in range(5)],
        ts=[1_767_225_600_000_000] * 5,
        received_at=[1_767_225_600_000_000] * 5,
        event_type=["page_view"] * 5,
    )
    rows = columns_to_arrow([columns])
    store.commit_log_batch(1_000, events=rows)
    store.commit_log_batch(1_000, events=rows)  # the same round again
    assert store.query("SELECT count(*) FROM events WHERE project_id = ?", ["p"]) == [(5,)]
    assert store.log_position() == 1_000
    store.commit_log_batch(2_000, events=rows)  # the next round still loads
    assert store.query("SELECT count(*) FROM events WHERE project_id = ?", ["p"]) == [(10,)]
    store.close()
