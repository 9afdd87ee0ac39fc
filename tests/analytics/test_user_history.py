"""Each user's active days in one row (avila.storage.user_history), and retention read from it.

Retention's default question (any event, UTC, bounds at midnight, no identity links) reads each
user's first day and active days from the history (lifecycle's and stickiness's too: below) (folded by the loader's upkeep) and the user
days from its watermark on. Its answers must equal the events' (``raw=True``) and the pandas
oracle's on generated data written late and shuffled through both write paths and a bulk
import, folded in small chunks between the writes (late writes then add user days before the
watermark, kept apart until a fold takes them in), with erasure and unicode ids. After every
step the history and the late rows hold exactly the user days before the watermark.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from analytics_data import PROJECT, T0, event, link_identity, to_table
from analytics_oracles import retention_oracle
from journey_oracles import lifecycle_oracle
from test_user_days_reports import (
    LIFECYCLE,
    QUESTIONS,
    STICKY,
    _body,
    _lifecycle_table,
    _linked,
    _source,
    assert_stickiness_answers,
)
from test_user_days_reports import _rows as user_days_rows

from avila.analytics import erase_user, lifecycle, retention, stickiness
from avila.export.bulk import bulk_import
from avila.ingest.service import IngestService
from avila.storage import rollups, user_history
from avila.storage.duckdb.migrations import MIGRATIONS
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.ingest_log import IngestLogConfig

# the modules (the package's ``lifecycle`` and ``stickiness`` are the functions)
lifecycle_module = importlib.import_module("avila.analytics.lifecycle")
stickiness_module = importlib.import_module("avila.analytics.stickiness")

SPAN = timedelta(weeks=10)
LATE = T0 + timedelta(weeks=3)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(user_history, "FOLD_ROWS", 40)  # many small folds
    opened = DuckDBStore(tmp_path / "history.duckdb")
    opened.ingest_log_config = IngestLogConfig(tmp_path / "log")
    yield opened
    opened.close()


def _rows(seed: int) -> list[dict[str, Any]]:
    """The user-days reports' generated rows (ties, unicode, a day's last microsecond, a late
    first event, another project's user), and a second event of a user on a day."""
    return [*user_days_rows(seed), event("u001", T0 + timedelta(days=5))]


def _through(store: DuckDBStore) -> date:
    return store.query("SELECT through FROM rollup_user_history_through")[0][0]  # type: ignore[no-any-return]


def _late(store: DuckDBStore) -> int:
    return int(store.query("SELECT count(*) FROM rollup_user_history_late")[0][0])


def _fold_all(store: DuckDBStore) -> int:
    folds = 0
    while True:
        done = store.fold_user_history(max_folds=3)
        folds += done.days
        if not done.more_left:
            break
    assert _through(store) == rollups.finished_before()
    assert _late(store) == 0
    return folds


def _assert_history_is_true(store: DuckDBStore) -> None:
    """Every user day before the watermark is in the history or the late rows, both hold only
    user days, and each history row's first day is the least of its days."""
    through = _through(store)
    history = set(
        store.query(
            "SELECT project_id, user_key, unnest(days) FROM rollup_user_history",
        )
    )
    late = set(store.query("SELECT project_id, user_key, day FROM rollup_user_history_late"))
    user_days = set(store.query("SELECT project_id, user_key, day FROM rollup_user_days"))
    assert history | late <= user_days
    assert {d for d in user_days if d[2] < through} <= history | late
    assert store.query(
        "SELECT count(*) FROM rollup_user_history WHERE first_day <> list_min(days)"
    ) == [(0,)]
    keys = store.query(
        "SELECT count(*), count(DISTINCT (project_id, user_key)) FROM rollup_user_history"
    )
    assert keys[0][0] == keys[0][1]


def _assert_same(store: DuckDBStore, rows: list[dict[str, Any]]) -> None:
    _assert_history_is_true(store)
    for start, end, period, periods in QUESTIONS:
        for mode in ("exact", "on_or_after"):
            body = _body(start, end, period, periods, mode)
            assert _source(store, body) == "history", body
            got = retention(store, PROJECT, body)
            assert got == retention(store, PROJECT, body, raw=True), body
            want = retention_oracle(
                rows, PROJECT, start, end, period, periods, "UTC", mode, None, None
            )
            assert {c["cohort_start"]: c["retained"] for c in got["cohorts"]} == want, body
    _assert_same_lifecycle(store, rows)
    _assert_same_stickiness(store, rows)


#: Stickiness questions in UTC, and whether the history's integer holds their periods' days:
#: the user days' questions (up to 11 weeks or 3 months), and 21 weeks (147 bits; too many).
STICKY_ASKED = [*((*q, True) for q in STICKY), (T0, T0 + timedelta(weeks=20), "week", False)]


def _assert_same_stickiness(
    store: DuckDBStore, rows: list[dict[str, Any]], *, history: bool = True
) -> None:
    for start, end, period, fits in STICKY_ASKED:
        body = {"period": period, "start_time": start, "end_time": end}
        assert _stickiness_reads_history(store, body) is (history and fits), body
        assert_stickiness_answers(store, rows, body)


def _stickiness_reads_history(store: DuckDBStore, body: dict[str, Any]) -> bool:
    found: list[bool] = []
    history_sql = stickiness_module._history_sql

    def spy(*args: Any) -> Any:
        found.append(True)
        return history_sql(*args)

    stickiness_module._history_sql = spy
    try:
        stickiness(store, PROJECT, body)
    finally:
        stickiness_module._history_sql = history_sql
    return bool(found)


#: Lifecycle questions: about any event, in UTC and away from it, by week and month the
#: history's rows answer (away from UTC with the events of the days that straddle periods:
#: Berlin's and Santiago's clock changes, Kathmandu's 45 minutes); by day away from UTC, and
#: with an event condition, the events are read, and the history says who was seen before.
LIFECYCLE_ASKED = [
    ("UTC", None),
    ("Europe/Berlin", None),
    ("Asia/Kathmandu", None),
    ("America/Santiago", None),
    ("UTC", {"condition_type": "page_view"}),
]


def _assert_same_lifecycle(
    store: DuckDBStore, rows: list[dict[str, Any]], *, history: bool = True
) -> None:
    mine = [r for r in rows if r["project_id"] == PROJECT]
    for start, end, period in LIFECYCLE:
        for tz, event_cond in LIFECYCLE_ASKED:
            body: dict[str, Any] = {
                "period": period, "start_time": start, "end_time": end, "timezone": tz,
            }  # fmt: skip
            if event_cond:
                body["event"] = event_cond
            assert _lifecycle_reads(store, body) == _expected_read(body, history), body
            got = lifecycle(store, PROJECT, body)
            assert got == lifecycle(store, PROJECT, body, raw=True), body
            want = lifecycle_oracle(mine, start, end, period, tz, event_cond)
            assert _lifecycle_table(got) == want, body


def _expected_read(body: dict[str, Any], history: bool) -> str | None:
    """What :func:`_lifecycle_reads` should find for ``body`` when the history can stand in
    for the events (``history``) or cannot."""
    if not history:
        return None
    if body.get("event") or (body["timezone"] != "UTC" and body["period"] == "day"):
        return "seen before"
    return "rows" if body["timezone"] == "UTC" else "rows and straddling days"


def _lifecycle_reads_history(store: DuckDBStore, body: dict[str, Any]) -> bool:
    return _lifecycle_reads(store, body) is not None


def _lifecycle_reads(store: DuckDBStore, body: dict[str, Any]) -> str | None:
    """What ``lifecycle`` read of the per-user history: ``"rows"`` (about any event in UTC),
    ``"rows and straddling days"`` (the same away from UTC, with the events of the days that
    straddle periods), ``"seen before"`` (the users it holds as seen before the scan), or None
    (nothing)."""
    found: list[Any] = []
    seen_before = lifecycle_module._seen_before
    history_sql, zoned_sql = lifecycle_module._history_sql, lifecycle_module._zoned_history_sql

    def seen_spy(*args: Any) -> Any:
        seen = seen_before(*args)
        found.append(None if seen is None else "seen before")
        return seen

    def rows_spy(*args: Any, **kwargs: Any) -> Any:
        found.append("rows")
        return history_sql(*args, **kwargs)

    def zoned_spy(*args: Any, **kwargs: Any) -> Any:
        found.append("rows and straddling days")
        return zoned_sql(*args, **kwargs)

    lifecycle_module._seen_before = seen_spy
    lifecycle_module._history_sql = rows_spy
    lifecycle_module._zoned_history_sql = zoned_spy
    try:
        lifecycle(store, PROJECT, body)
    finally:
        lifecycle_module._seen_before = seen_before
        lifecycle_module._history_sql = history_sql
        lifecycle_module._zoned_history_sql = zoned_sql
    assert len(found) <= 1
    return found[0] if found else None


def test_lifecycle_from_the_history_holds_the_most_periods_the_bits_do(
    store: DuckDBStore,
) -> None:
    """By day over 63 days: 64 periods with the one before, every bit of the history's bit
    set; a day more reads the activity pairs of the events instead (same answers)."""
    rows = _rows(7)
    store.append_events(to_table(rows))
    _fold_all(store)
    mine = [r for r in rows if r["project_id"] == PROJECT]
    start = T0 + timedelta(days=1)
    for days, history in ((63, True), (64, False)):
        body = {"period": "day", "start_time": start, "end_time": start + timedelta(days=days)}
        assert _lifecycle_reads_history(store, body) is history
        got = lifecycle(store, PROJECT, body)
        assert got == lifecycle(store, PROJECT, body, raw=True)
        want = lifecycle_oracle(mine, start, start + timedelta(days=days), "day", "UTC", None)
        assert _lifecycle_table(got) == want
        assert sum(p["new"] for p in got["periods"]) > 0


@pytest.mark.parametrize("seed", [1, 2])
def test_retention_from_the_history_equals_the_events_and_the_oracle(
    store: DuckDBStore, seed: int
) -> None:
    rows = _rows(seed)
    late = [r for r in rows if r["ts"] < LATE]
    rest = [r for r in rows if r["ts"] >= LATE]
    half = len(rest) // 2
    store.append_events(to_table(rest[:half]))
    _assert_same(store, rest[:half])  # nothing folded yet: the user days alone
    assert _fold_all(store) > 3
    _assert_same(store, rest[:half])  # the history alone
    store.commit_log_batch(2000, events=to_table(rest[half:]))
    _assert_same(store, rest)
    store.append_events(to_table(late))  # late: kept apart, the watermark stays
    assert _through(store) == rollups.finished_before()
    waiting = _late(store)
    # every write since the fold was of days before the watermark: its (user, day) pairs, once
    assert waiting == sum(
        len({(r["project_id"], r["user_id"], r["ts"].date()) for r in write})
        for write in (rest[half:], late)
    )
    _assert_same(store, rows)
    assert store.fold_user_history(max_folds=1).days == 1  # the late rows' first days
    assert 0 < _late(store) < waiting
    _assert_same(store, rows)
    erase_user(store, PROJECT, "u003")  # with late rows still waiting
    rows = [r for r in rows if (r["project_id"], r["user_id"]) != (PROJECT, "u003")]
    _assert_same(store, rows)
    _fold_all(store)
    _assert_same(store, rows)
    erase_user(store, PROJECT, "édge ☕")
    _assert_same(store, [r for r in rows if r["user_id"] != "édge ☕"])
    assert store.query(
        "SELECT count(*) FROM rollup_user_history WHERE project_id = ? AND user_key ="
        f" {rollups.USER_KEY.replace('user_id', '?')}",
        [PROJECT, "édge ☕"],
    ) == [(0,)]


def test_a_late_write_waits_apart_and_is_folded_first(store: DuckDBStore) -> None:
    store.append_events(to_table([event("a", T0 + timedelta(days=d)) for d in range(5)]))
    finished = rollups.finished_before()
    look = store._read_apart(lambda cursor: user_history.due_fold(cursor, finished))
    assert look == user_history.Fold(date(1, 1, 1), finished)
    _fold_all(store)
    store.append_events(to_table([event("b", T0 - timedelta(days=3)), event("c", T0)]))
    assert _through(store) == finished  # the watermark never moves back
    assert _late(store) == 2
    look = store._read_apart(lambda cursor: user_history.due_fold(cursor, finished))
    assert look == user_history.Fold(
        (T0 - timedelta(days=3)).date(), T0.date() + timedelta(1), True
    )
    # a fold of user days that does not start at the watermark does nothing
    with store.bulk_transaction() as cursor:
        assert not user_history.fold(cursor, user_history.Fold(T0.date(), finished))
    _assert_history_is_true(store)
    assert store.fold_user_history(max_folds=1).days == 1
    assert _late(store) == 0
    _assert_history_is_true(store)
    # a write of today's events adds no late row
    store.append_events(to_table([event("d", datetime.utcnow())]))
    assert (_through(store), _late(store)) == (finished, 0)


def test_a_bulk_import_of_history_waits_apart_until_folded(
    store: DuckDBStore, tmp_path: Path
) -> None:
    rows = _rows(3)
    recent = [r for r in rows if r["ts"] >= LATE]
    older = [r for r in rows if r["ts"] < LATE and r["project_id"] == PROJECT]
    # one event per user and time: the import drops a second one with the same content
    older = list({(r["user_id"], r["ts"]): r for r in older}.values())
    older = [{**r, "event_type": "page_view", "url": "/"} for r in older]  # as imported below
    store.append_events(to_table(recent))
    _fold_all(store)
    path = tmp_path / "older.ndjson"
    with path.open("w") as out:
        for r in older:
            body = {
                "event_id": r["event_id"],
                "user_id": r["user_id"],
                "event_type": {"type": "PageView", "data": {"url": "/"}},
                "timestamp": r["ts"].isoformat() + "Z",
            }
            out.write(json.dumps(body) + "\n")
    summary = bulk_import(path, "ndjson", store, PROJECT)
    assert summary.accepted == len(older)
    assert _through(store) == rollups.finished_before()
    assert _late(store) == len({(r["user_id"], r["ts"].date()) for r in older})
    _assert_same(store, recent + older)
    _fold_all(store)
    _assert_same(store, recent + older)


def test_an_upgraded_store_starts_with_an_empty_history_and_the_same_answers(
    tmp_path: Path,
) -> None:
    """A store from before migration 18 (the tables and version row taken away): the history
    starts empty with its watermark at the first date, so retention reads the user days until
    folds take them in."""
    path = tmp_path / "old.duckdb"
    rows = _rows(4)
    old = DuckDBStore(path)
    old.append_events(to_table(rows))
    cursor = old._cursor()
    cursor.execute("DROP TABLE rollup_user_history")
    cursor.execute("DROP TABLE rollup_user_history_through")
    cursor.execute("DROP TABLE rollup_user_history_late")
    cursor.execute("DELETE FROM schema_version WHERE version >= 18")
    old.close()
    upgraded = DuckDBStore(path)
    try:
        assert upgraded.query("SELECT max(version) FROM schema_version") == [(MIGRATIONS[-1][0],)]
        assert _through(upgraded) == date(1, 1, 1)
        assert upgraded.query("SELECT count(*) FROM rollup_user_history") == [(0,)]
        _assert_same(upgraded, rows)
        _fold_all(upgraded)
        assert upgraded.query("SELECT count(*) FROM rollup_user_history")[0][0] > 50
        _assert_same(upgraded, rows)
    finally:
        upgraded.close()


def test_the_loader_folds_the_finished_days_it_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ingest service writes through the log; the store's own loader folds the
    finished days into the history when idle."""
    from avila.storage import loader as loader_module

    monkeypatch.setattr(loader_module, "COMPACT_EVERY_S", 0.0)
    store = DuckDBStore(tmp_path / "loaded.duckdb")
    store.ingest_log_config = IngestLogConfig(tmp_path / "log")
    rows = [event(f"u{(r * 7) % 5}", T0 + timedelta(hours=r * 9)) for r in range(30)]

    async def send() -> None:
        service = IngestService(store)
        await service.start()
        for r, row in enumerate(rows):
            body = {
                "event_id": f"e{r}",
                "user_id": row["user_id"],
                "timestamp": row["ts"].isoformat() + "Z",
                "event_type": {"type": "PageView", "data": {"url": "/"}},
            }
            assert (await service.ingest([json.dumps(body).encode()], PROJECT)).accepted == 1
        await asyncio.to_thread(store.read_barrier)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            _through(store) != rollups.finished_before() or _late(store)
        ):
            await asyncio.sleep(0.2)  # idle: the loader folds at its idle ticks
        await service.close()

    try:
        asyncio.run(send())
        assert (_through(store), _late(store)) == (rollups.finished_before(), 0)
        assert store.query("SELECT count(*) FROM rollup_user_history") == [(5,)]
        _assert_same(store, rows)
    finally:
        store.close()


def test_lifecycle_reads_every_first_event_when_the_history_cannot_stand_in(
    store: DuckDBStore,
) -> None:
    """A write that bypassed the rollups before the scan: lifecycle reads each user's first
    event from the events, as before. (The bypassed event is the first of a user active in the
    window: the history would make them new there.)"""
    rows = [*_rows(5), event("ghost", T0 + timedelta(days=10))]
    store.append_events(to_table(rows))
    _fold_all(store)
    _assert_same_lifecycle(store, rows)
    store.execute(
        "INSERT INTO events (project_id, event_id, user_id, ts, received_at, event_type, url)"
        " VALUES (?, 'sneaky', 'ghost', ?, ?, 'page_view', '/')",
        [PROJECT, T0 - timedelta(days=400), T0],
    )
    _assert_same_lifecycle(store, [*rows, event("ghost", T0 - timedelta(days=400))], history=False)


def test_stickiness_reads_the_events_when_the_history_cannot_stand_in(
    store: DuckDBStore,
) -> None:
    """A write that bypassed the rollups inside the questions' days."""
    rows = _rows(5)
    store.append_events(to_table(rows))
    _fold_all(store)
    _assert_same_stickiness(store, rows)
    sneaky = T0 + timedelta(days=30, hours=1)
    store.execute(
        "INSERT INTO events (project_id, event_id, user_id, ts, received_at, event_type, url)"
        " VALUES (?, 'sneaky', 'ghost', ?, ?, 'page_view', '/')",
        [PROJECT, sneaky, T0],
    )
    _assert_same_stickiness(store, [*rows, event("ghost", sneaky)], history=False)


def test_lifecycle_with_identity_links_reads_every_first_event(store: DuckDBStore) -> None:
    """The history holds raw ids' keys; a person is several ids."""
    rows = _rows(6)
    store.append_events(to_table(rows))
    _fold_all(store)
    link_identity(store, "u002", "u001")
    _assert_same_lifecycle(store, _linked(rows), history=False)
    _assert_same_stickiness(store, _linked(rows), history=False)
