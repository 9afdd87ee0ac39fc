"""The ingest log's loader into ClickHouse stores each frame exactly once across a crash between
its inserts and the position record (ClickHouse has no transaction to hold them together).

The "crash" is a fault injected into the real store (a subclass whose final position record
raises, as a process killed at that instant would never write it); the log, the loader and the
chdb engine are real. The restarted loader uses a different round size, so without the replay
of the pending round its blocks would carry other deduplication tokens and be stored twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from avila.storage import frames
from avila.storage.clickhouse.store import ClickHouseStore
from avila.storage.clickhouse.target import ClickHouseOptions, parse_url
from avila.storage.ingest_log import IngestLog, IngestLogConfig
from avila.storage.load_progress import LoadProgress
from avila.storage.loader import Loader
from avila.storage.schema import EVENT_COLUMN_NAMES

N_FRAMES, PER_FRAME = 12, 25


def _columns(frame: int) -> dict[str, list[object]]:
    cols: dict[str, list[object]] = {n: [None] * PER_FRAME for n in EVENT_COLUMN_NAMES}
    cols["project_id"] = ["p"] * PER_FRAME
    cols["event_id"] = [f"f{frame}-{i}" for i in range(PER_FRAME)]
    cols["user_id"] = [f"u{i % 5}" for i in range(PER_FRAME)]
    # Two months: each insert block is split into two parts (partitions).
    cols["ts"] = [
        1_772_323_200_000_000 + (frame * 86_400_000_000 * 3) + i for i in range(PER_FRAME)
    ]
    cols["received_at"] = [1_772_323_200_000_000] * PER_FRAME
    cols["event_type"] = ["page_view"] * PER_FRAME
    return cols


def _write_log(directory: Path) -> int:
    async def run() -> int:
        progress = LoadProgress()
        log = IngestLog(IngestLogConfig(directory), progress, lambda position: None)
        log.recover(0)
        log.start()
        end = 0
        for f in range(N_FRAMES):
            end = await log.append(frames.encode_events(_columns(f)), PER_FRAME)
        log.close()
        return end

    return asyncio.run(run())


class CrashBeforePositionRecord(ClickHouseStore):
    """Dies (raises) where a process killed after its inserts would stop: before the round's
    new position is recorded."""

    def _record_position(self, position: int, pending: int) -> None:
        if pending == 0:
            raise RuntimeError("killed before the position record")
        super()._record_position(position, pending)


def _open(cls: type[ClickHouseStore], path: Path) -> ClickHouseStore:
    return cls(parse_url(f"chdb://{path}"), ClickHouseOptions())


def _report(position: int, rows: int, seconds: float) -> None:
    pass


def test_a_round_retried_after_a_crash_is_stored_once(tmp_path: Path) -> None:
    log_dir, db = tmp_path / "log", tmp_path / "chdb"
    end = _write_log(log_dir)

    crashing = _open(CrashBeforePositionRecord, db)
    crashing._log_id = crashing._log_id_for(log_dir)
    loader = Loader(crashing, log_dir, _report, max_rows=4 * PER_FRAME)
    with pytest.raises(RuntimeError, match="killed"):
        loader.load_once(end)
    first_round = crashing.pending_log_round()
    stored_at_crash = crashing.query("SELECT count() FROM events")[0][0]
    crashing.close()
    assert first_round > 0 and stored_at_crash == 4 * PER_FRAME  # inserted, not recorded

    restarted = _open(ClickHouseStore, db)
    restarted._log_id = restarted._log_id_for(log_dir)
    # A bigger round size: only the replay of the pending round keeps the first block's tokens.
    loader = Loader(restarted, log_dir, _report, max_rows=10 * PER_FRAME)
    assert loader.position == 0
    rounds = []
    while loader.position < end:
        loader.load_once(end)
        rounds.append(loader.position)
    assert rounds[0] == first_round  # the pending round replayed with exactly its old end
    ids = [r[0] for r in restarted.query("SELECT event_id FROM events")]
    assert len(ids) == len(set(ids)) == N_FRAMES * PER_FRAME
    assert restarted.log_position() == end and restarted.pending_log_round() == 0
    # A loader started again after everything is loaded stores nothing more.
    loader = Loader(restarted, log_dir, _report)
    assert loader.position == end
    restarted.commit_log_batch(end)  # a round at or below the recorded position is skipped
    assert restarted.query("SELECT count() FROM events") == [(N_FRAMES * PER_FRAME,)]
    restarted.close()


def test_the_same_block_inserted_twice_is_kept_once(tmp_path: Path) -> None:
    """The ClickHouse mechanism itself: a block retried with the same token is dropped, also
    when it spans two partitions (a plain MergeTree needs non_replicated_deduplication_window)."""
    store = _open(ClickHouseStore, tmp_path / "chdb")
    from avila.storage.schema import columns_to_arrow

    table = columns_to_arrow([_columns(0), _columns(11)])
    for _ in range(3):
        store._insert_arrow("events", table, "avila-log:x:0-10:events")
    assert store.query("SELECT count(), uniqExact(toYYYYMM(ts)) FROM events") == [
        (2 * PER_FRAME, 2)
    ]
    store._insert_arrow("events", table, "avila-log:x:10-20:events")  # another round: stored
    assert store.query("SELECT count() FROM events") == [(4 * PER_FRAME,)]
    store.close()
