"""Loader rounds against a real DuckDB file and real log segments: catch-up rounds (a backlog
loads in rounds larger than ``max_rows``) store every row once, with the same values as the
requests carried, and the same rollups as SQL computes from the stored rows."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from avila.ingest.service import IngestService
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.ingest_log import IngestLogConfig
from avila.storage.loader import Loader
from avila.storage.log_segments import read_frames
from avila.storage.rollups import DAILY_FROM

PER_REQUEST = 50
REQUESTS = 30


def _event(i: int) -> dict[str, Any]:
    kind = i % 3
    event: dict[str, Any] = {
        "event_id": f"e-{i}",
        "user_id": f"u{i % 11}",
        "timestamp": f"2026-01-{10 + i % 5:02d}T{i % 24:02d}:00:00Z",
        "context": {"location": {"city": "São Paulo" if i % 2 else "Zürich"}},
    }
    if kind == 0:
        event["event_type"] = {"type": "PageView", "data": {"url": f"/p/{i % 7}", "title": "ü"}}
    elif kind == 1:
        event["event_type"] = {
            "type": "Purchase",
            "data": {"order_id": f"o{i}", "revenue": round(i * 1.37, 2), "currency": "EUR"},
        }
    else:
        event["event_type"] = {"type": "Custom", "data": {"name": f"n{i % 4}"}}
        event["metadata"] = {"k": "\u65e5\u672c"}
    return event


EVENTS = [_event(i) for i in range(PER_REQUEST * REQUESTS)]


@pytest.fixture(scope="module")
def filled_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of REQUESTS frames of PER_REQUEST events, written by the real ingest service."""
    tmp = tmp_path_factory.mktemp("filled")
    source = DuckDBStore(tmp / "source.duckdb")
    # one segment: the source's own loader never deletes the newest one
    source.ingest_log_config = IngestLogConfig(tmp / "log", segment_bytes=1 << 30)

    async def fill() -> None:
        service = IngestService(source)
        await service.start()
        for r in range(REQUESTS):
            batch = EVENTS[r * PER_REQUEST : (r + 1) * PER_REQUEST]
            result = await service.ingest([json.dumps(e).encode() for e in batch], "p")
            assert result.accepted == PER_REQUEST
        await service.close()

    asyncio.run(fill())
    shutil.copytree(tmp / "log", tmp / "log-copy")
    source.close()
    return tmp / "log-copy"


def _replay(log: Path, db: Path, *, max_rows: int, catch_up_rows: int, target: int) -> list[int]:
    """Rounds of a loader over ``log`` up to ``target``, one after the other; their sizes."""
    store = DuckDBStore(db)
    loader = Loader(store, log, lambda *_: None, max_rows=max_rows, catch_up_rows=catch_up_rows)
    sizes = []
    position = loader.position
    while position < target:
        prepared = loader.prepare(position, target)
        loader.commit(prepared)
        position = prepared.end
        sizes.append(prepared.rows)
    store.close()
    return sizes


@pytest.fixture
def log(filled_log: Path, tmp_path: Path) -> Path:
    """This test's own copy of the filled log."""
    copy = tmp_path / "log"
    shutil.copytree(filled_log, copy)
    return copy


def _pieced_loader(store: DuckDBStore, log: Path, report: Any = lambda *_: None) -> Loader:
    """Rounds of 100 rows, catch-up rounds of 600 committed in pieces of 150."""
    loader = Loader(store, log, report, max_rows=100, catch_up_rows=600)
    loader.piece_rows = 150
    return loader


def _log_end(log: Path) -> list[int]:
    return [end for end, _ in read_frames(log, 0)]


def test_a_backlog_loads_in_catch_up_rounds_and_each_row_once(log: Path, tmp_path: Path) -> None:
    ends = _log_end(log)
    assert len(ends) == REQUESTS
    # 1,500 events waiting: rounds grow to 600 while the backlog holds at least half of that
    sizes = _replay(log, tmp_path / "t.duckdb", max_rows=100, catch_up_rows=600, target=ends[-1])
    assert sizes == [600, 600, 300]
    store = DuckDBStore(tmp_path / "t.duckdb", read_only=True)
    try:
        rows = store.query(
            "SELECT event_id, user_id, ts, event_type, url, title, order_id, event_name,"
            " revenue, currency, city, metadata FROM events ORDER BY event_id"
        )
        # the oracle: the requests themselves
        expected = []
        for e in EVENTS:
            data = e["event_type"]["data"]
            expected.append(
                (
                    e["event_id"],
                    e["user_id"],
                    e["timestamp"][:13].replace("T", " "),
                    {"PageView": "page_view", "Purchase": "purchase", "Custom": "custom"}[
                        e["event_type"]["type"]
                    ],
                    data.get("url"),
                    data.get("title"),
                    data.get("order_id"),
                    data.get("name"),
                    data.get("revenue"),
                    data.get("currency"),
                    e["context"]["location"]["city"],
                    e.get("metadata", {}),
                )
            )
        expected.sort(key=lambda r: r[0])
        got = [
            (r[0], r[1], r[2].strftime("%Y-%m-%d %H"), *r[3:11], json.loads(r[11])) for r in rows
        ]
        assert got == expected
        # rollups written beside the rows equal SQL's aggregation of the stored rows
        summed = (
            "SELECT project_id, day, event_type, kind, value, sum(events)::BIGINT, sum(revenue)"
            " FROM ({}) GROUP BY ALL ORDER BY ALL"
        )
        assert store.query(summed.format("SELECT * FROM rollup_daily")) == store.query(
            summed.format(DAILY_FROM.format(src="events"))
        )
        assert store.query("SELECT sum(events) FROM rollup_user_days") == [(len(EVENTS),)]
        assert store.log_position() == ends[-1]
    finally:
        store.close()


def test_a_short_backlog_keeps_ordinary_rounds(log: Path, tmp_path: Path) -> None:
    ends = _log_end(log)
    # 250 events waiting: less than half a catch-up round, so rounds stop at max_rows
    sizes = _replay(log, tmp_path / "t.duckdb", max_rows=100, catch_up_rows=600, target=ends[4])
    assert sizes == [100, 100, 50]
    # without catch-up rounds (a backend that gains nothing from them) the same
    sizes = _replay(log, tmp_path / "u.duckdb", max_rows=100, catch_up_rows=0, target=ends[-1])
    assert sizes == [100] * 15


def test_catch_up_then_exactly_once_across_a_restart(log: Path, tmp_path: Path) -> None:
    # A catch-up round is one transaction with its log position: a loader stopped after it and
    # started again loads only what follows.
    ends = _log_end(log)
    db = tmp_path / "t.duckdb"
    assert _replay(log, db, max_rows=100, catch_up_rows=600, target=ends[19]) == [600, 400]
    assert _replay(log, db, max_rows=100, catch_up_rows=600, target=ends[-1]) == [500]
    store = DuckDBStore(db, read_only=True)
    try:
        assert store.query("SELECT count(*), count(DISTINCT event_id) FROM events") == [
            (len(EVENTS), len(EVENTS))
        ]
    finally:
        store.close()


def _run_threads(loader: Loader, end: int, timeout: float = 60.0) -> None:
    import time

    loader.start()
    loader.notify(end)
    deadline = time.monotonic() + timeout
    while loader.position < end and time.monotonic() < deadline:
        time.sleep(0.02)
    loader.stop()
    assert loader.position == end


def _count(db: Path) -> tuple[int, int, int]:
    store = DuckDBStore(db, read_only=True)
    try:
        (row,) = store.query(
            "SELECT count(*), count(DISTINCT event_id), (SELECT sum(events) FROM rollup_daily"
            " WHERE kind = 'type') FROM events"
        )
        return int(row[0]), int(row[1]), int(row[2])
    finally:
        store.close()


def test_a_catch_up_round_streams_in_pieces_and_commits_once(log: Path, tmp_path: Path) -> None:
    end = _log_end(log)[-1]
    store = DuckDBStore(tmp_path / "t.duckdb")
    rounds: list[tuple[int, int]] = []
    loader = _pieced_loader(store, log, lambda e, n, _: rounds.append((e, n)))
    added: list[int] = []
    opened = store.open_log_round

    def counting(start: int) -> Any:
        transaction = opened(start)
        add = transaction.add

        def add_piece(events: Any = None, devices: Any = None, tables: Any = ()) -> None:
            added.append(0 if events is None else events.num_rows)
            add(events, devices, tables)

        transaction.add = add_piece  # type: ignore[method-assign]
        return transaction

    store.open_log_round = counting  # type: ignore[method-assign]
    _run_threads(loader, end)
    store.close()
    # three rounds of 600 / 600 / 300 rows, each a transaction of pieces of 150 rows
    assert [n for _, n in rounds] == [600, 600, 300]
    assert added == [150] * 10
    assert _count(tmp_path / "t.duckdb") == (len(EVENTS), len(EVENTS), len(EVENTS))


def test_a_failed_piece_retries_the_whole_round_and_stores_it_once(
    log: Path, tmp_path: Path
) -> None:
    end = _log_end(log)[-1]
    store = DuckDBStore(tmp_path / "t.duckdb")
    loader = _pieced_loader(store, log)
    failures = {"left": 2}
    opened = store.open_log_round

    def failing(start: int) -> Any:
        transaction = opened(start)
        add = transaction.add
        calls = {"n": 0}

        def add_piece(events: Any = None, devices: Any = None, tables: Any = ()) -> None:
            calls["n"] += 1
            add(events, devices, tables)  # the rows are in the transaction, then it fails
            if calls["n"] == 3 and failures["left"]:
                failures["left"] -= 1
                raise OSError("injected: disk full")

        transaction.add = add_piece  # type: ignore[method-assign]
        return transaction

    store.open_log_round = failing  # type: ignore[method-assign]
    _run_threads(loader, end)
    store.close()
    assert failures["left"] == 0 and loader.failures == 2
    assert _count(tmp_path / "t.duckdb") == (len(EVENTS), len(EVENTS), len(EVENTS))


def test_a_read_failure_inside_a_round_abandons_its_pieces(
    log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = _log_end(log)[-1]
    store = DuckDBStore(tmp_path / "t.duckdb")
    loader = _pieced_loader(store, log)
    from avila.storage import frames

    decode = frames.decode_event_values
    calls = {"n": 0}

    def flaky(payload: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 8:  # the 8th entry: the round has sent two pieces already
            raise OSError("injected: read error")
        return decode(payload)

    monkeypatch.setattr(frames, "decode_event_values", flaky)
    _run_threads(loader, end)
    store.close()
    assert loader.failures == 1
    assert _count(tmp_path / "t.duckdb") == (len(EVENTS), len(EVENTS), len(EVENTS))


def test_a_small_round_lingers_until_a_reader_flushes_or_the_log_grows(
    log: Path, tmp_path: Path
) -> None:
    """A small round waits (here a 60 s linger); a reader's flush starts it at once, and so
    does a pending log past ``linger_bytes``."""
    ends = _log_end(log)
    store = DuckDBStore(tmp_path / "t.duckdb")
    loaded: list[int] = []
    changed = threading.Condition()

    def report(position: int, rows: int, seconds: float) -> None:
        with changed:
            loaded.append(position)
            changed.notify_all()

    def reaches(position: int, timeout: float) -> bool:
        with changed:
            return changed.wait_for(lambda: bool(loaded) and loaded[-1] >= position, timeout)

    loader = Loader(store, log, report, round_interval=0.05, linger=60.0, linger_bytes=1 << 30)
    loader.start()
    try:
        loader.notify(ends[0])
        assert reaches(ends[0], 10)  # after an idle spell a round starts at once
        loader.notify(ends[1])
        assert not reaches(ends[1], 1.0)  # small: lingers (for up to 60 s)
        loader.flush()
        assert reaches(ends[1], 10)
        loader.linger_bytes = 1
        loader.notify(ends[2])
        assert reaches(ends[2], 10)  # past linger_bytes: no linger
    finally:
        loader.stop()
        store.close()


def test_a_round_that_would_skip_unloaded_log_is_refused(tmp_path: Path) -> None:
    """A round continues from the recorded position: one starting beyond it would record its
    end and leave the log between unloaded, so the store refuses to open it."""
    store = DuckDBStore(tmp_path / "s.duckdb")
    try:
        recorded = store.log_position()
        with pytest.raises(ValueError, match="unloaded"):
            store.open_log_round(recorded + 10)
        round_ = store.open_log_round(recorded)  # and the store is usable afterwards
        round_.commit(recorded + 10)
        assert store.log_position() == recorded + 10
    finally:
        store.close()
