"""Compaction of the daily rollups (avila.storage.rollups.compact) changes no answer.

Many small writes (both write paths, two events each, late events, duplicates), identity links
and a GDPR erasure leave each rollup key spread over many partial rows. Compaction must leave
exactly one row per key (keys whose events sum to zero gone), rows equal to what the rollups'
own SQL computes from the stored events (an independent recomputation), and every
rollup-backed report, including the stitched ones, answering as before and as the raw rows do.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from analytics_data import (
    PROJECT,
    T0,
    event,
    link_identity,
    load_late_and_shuffled,
    random_events,
    to_table,
)

from avila.analytics import erase_user, overview, retention, stickiness, trends
from avila.ingest.service import IngestService
from avila.storage import rollups
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.ingest_log import IngestLogConfig
from avila.storage.rollups import DAILY_FROM

EVERY_ROW = [{"property": "event_type", "operator": "is_set"}]
DAILY_KEY = "project_id, day, event_type, kind, value"
USER_DAY_KEY = "project_id, day, user_id, country, device_type"


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = random_events(seed, 70, span=timedelta(days=4), grid=timedelta(minutes=9))
    for row in rows:
        row["referrer"] = rng.choice(["https://google.com/", None, "ünïcode.example"])
        row["device_type"] = rng.choice(["desktop", "mobile", None])
    rows.append(event("whale", T0 + timedelta(days=2), "purchase", order_id="w", revenue=9e12))
    # the only user of a page and a referrer: erased, their keys sum to zero
    rows.append(event("gone", T0 + timedelta(days=3), url="/only", referrer="https://only/"))
    rows.append(event("ユーザー", T0 + timedelta(days=1) - timedelta(microseconds=1), url="/ü"))
    return rows


def _answers(store: DuckDBStore) -> dict[str, Any]:
    spans = [
        {"start_time": T0, "end_time": T0 + timedelta(days=4)},
        {"start_time": T0 + timedelta(hours=5), "end_time": T0 + timedelta(days=2, hours=3)},
    ]
    out: dict[str, Any] = {}
    for i, span in enumerate(spans):
        out[f"overview {i}"] = overview(store, PROJECT, {**span, "top_n": 50})
        out[f"trends {i}"] = trends(store, PROJECT, {**span, "interval": "day"})
        out[f"stickiness {i}"] = stickiness(store, PROJECT, {**span, "period": "week"})
    out["retention"] = retention(
        store,
        PROJECT,
        {"period": "day", "periods": 4, "start_time": T0, "end_time": T0 + timedelta(days=4)},
    )
    return out


def _same_rows(store: DuckDBStore, sql: str, want: str) -> bool:
    """The multisets of rows of two queries are equal."""
    return store.query(f"SELECT count(*) FROM (({sql}) EXCEPT ALL ({want}))") == [
        (0,)
    ] and store.query(f"SELECT count(*) FROM (({want}) EXCEPT ALL ({sql}))") == [(0,)]


def _one_row_per_key(store: DuckDBStore) -> bool:
    return all(
        store.query(f"SELECT count(*) = count(DISTINCT ({key})) FROM {table}") == [(True,)]
        for table, key in (("rollup_daily", DAILY_KEY), ("rollup_user_days", USER_DAY_KEY))
    )


def _bounded(store: DuckDBStore) -> bool:
    """Every (table, day) holds no more rows than the compaction rule lets it grow to from its
    distinct keys."""
    return all(
        store.query(
            f"SELECT bool_and(n < {rollups.COMPACT_GROWTH} * k OR n - k < {rollups.COMPACT_MIN_ROWS})"
            f" FROM (SELECT day, count(*) AS n, count(DISTINCT ({key})) AS k FROM {table} GROUP BY day)"
        )
        == [(True,)]
        for table, key in (("rollup_daily", DAILY_KEY), ("rollup_user_days", USER_DAY_KEY))
    )


def test_compaction_sums_partial_rows_and_changes_no_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollups, "COMPACT_MIN_ROWS", 1)
    store = DuckDBStore(tmp_path / "compact.duckdb")
    rows = _rows(7)
    first = [event("first", T0 + timedelta(days=d, hours=1), url="/") for d in range(5)]
    rows += first
    store.append_events(to_table(first))
    assert store.compact_rollups().days == 0  # first sight of each day: its baseline only
    load_late_and_shuffled(store, rows[:-5], 7, late_before=T0 + timedelta(days=1), batch_rows=2)
    link_identity(store, "u002", "u001")
    link_identity(store, "u003", "u002")
    erase_user(store, PROJECT, "u005")
    erase_user(store, PROJECT, "whale")
    erase_user(store, PROJECT, "gone")
    assert not _one_row_per_key(store)
    zero = "SELECT count(*) FROM rollup_daily WHERE value IN ('/only', 'https://only/')"
    assert store.query(zero)[0][0] == 4  # their rows and the negated ones
    before = _answers(store)
    daily_rows = store.query("SELECT count(*) FROM rollup_daily")[0][0]

    compacted = store.compact_rollups(max_days=100).days

    assert compacted > 0
    assert _one_row_per_key(store)
    assert store.query(zero) == [(0,)]
    assert store.query("SELECT count(*) FROM rollup_daily")[0][0] < daily_rows / 3
    # the rows are what the rollups' SQL computes from the events now stored (erased users
    # included: their negated partials and their rows cancelled out and are gone)
    stored = "(SELECT * FROM events WHERE revenue IS NULL OR abs(revenue) < 1e32)"
    assert _same_rows(store, "SELECT * FROM rollup_daily", DAILY_FROM.format(src=stored))
    assert _same_rows(
        store,
        "SELECT * FROM rollup_user_days",
        f"SELECT {USER_DAY_KEY}, count(*), md5_number(user_id)"
        f" FROM (SELECT *, ts::DATE AS day FROM {stored}) GROUP BY ALL",
    )
    assert _answers(store) == before
    for span in ({"start_time": T0, "end_time": T0 + timedelta(days=4)},):
        got = overview(store, PROJECT, span)
        raw = overview(store, PROJECT, {**span, "filters": EVERY_ROW})
        for key in ("revenue", "avg_session_duration_seconds", "bounce_rate", "pages_per_session"):
            assert got.pop(key) == pytest.approx(raw.pop(key), rel=1e-12)
        assert got == raw
    # nothing grew since: nothing is due
    assert store.compact_rollups(max_days=100).days == 0
    store.close()


def test_a_day_is_due_once_it_doubles_by_enough_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollups, "COMPACT_MIN_ROWS", 20)
    monkeypatch.setattr(rollups, "_today", lambda: T0.date())  # days that still fill
    store = DuckDBStore(tmp_path / "due.duckdb")

    def write(n: int, users: list[str], day: int) -> None:
        for i in range(n):  # each write a partial row per table, for the same keys
            when = T0 + timedelta(days=day, minutes=i)
            user = users[i % len(users)]
            store.append_events(to_table([event(user, when, "custom", event_name="x")]))

    def user_day_rows(day: int) -> int:
        sql = "SELECT count(*) FROM rollup_user_days WHERE day = ?"
        return int(store.query(sql, [(T0 + timedelta(days=day)).date()])[0][0])

    # a day first seen with its keys' partial rows already past the rule (a store from before
    # compaction): due at once; its baseline is its distinct keys, not its rows
    write(25, ["old"], day=2)
    assert store.compact_rollups().days == 2
    assert user_day_rows(2) == 1
    # day 0: first seen with 12 rows of one key: baseline 1, grown by 11 (< 20)
    write(12, ["a"], day=0)
    assert store.compact_rollups().days == 0
    write(9, ["a"], day=0)  # 21 rows: 20 more than the baseline of 1
    assert store.compact_rollups().days == 2
    assert store.query("SELECT events FROM rollup_user_days WHERE user_id = 'a'") == [(21,)]
    # day 1: 30 user-day keys seen once each (baseline 30); 25 rows more is enough rows but
    # not double. (Its one rollup_daily key, one row per write, is due each time it has grown
    # by 20 rows.)
    users = [f"u{i}" for i in range(30)]
    write(30, users, day=1)
    assert store.compact_rollups().days == 1  # rollup_daily only
    assert user_day_rows(1) == 30
    write(25, users, day=1)
    assert store.compact_rollups().days == 1  # rollup_daily only
    assert user_day_rows(1) == 55
    write(5, users, day=1)  # 60 rows: twice the baseline
    assert store.compact_rollups().days == 1  # rollup_user_days (rollup_daily: 5 rows more)
    assert user_day_rows(1) == 30
    assert store.query("SELECT sum(events) FROM rollup_user_days") == [(25 + 21 + 60,)]
    write(40, ["a"], day=0)  # due again, but a read-only store never writes
    store.close()
    reader = DuckDBStore(tmp_path / "due.duckdb", read_only=True)
    assert reader.compact_rollups().days == 0
    assert reader.query("SELECT count(*) FROM rollup_user_days WHERE user_id = 'a'") == [(41,)]
    reader.close()


def test_a_finished_day_is_due_at_a_tenth_more_rows_a_day_still_filling_at_double(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Days before yesterday (UTC) no longer fill: each is compacted once its rows pass its
    baseline by FINISHED_GROWTH; yesterday and today keep the doubling rule. Sums unchanged."""
    monkeypatch.setattr(rollups, "COMPACT_MIN_ROWS", 3)
    today = (T0 + timedelta(days=10)).date()
    monkeypatch.setattr(rollups, "_today", lambda: today)
    store = DuckDBStore(tmp_path / "finished.duckdb")
    days = (0, 8, 9)  # finished, the last finished one (today - 2), yesterday
    users = [f"u{i}" for i in range(30)]

    def write(day: int, who: list[str], minute: int) -> None:
        when = T0 + timedelta(days=day, minutes=minute)
        store.append_events(to_table([event(u, when, "custom", event_name="x") for u in who]))

    def user_day_rows() -> list[int]:
        sql = "SELECT count(*) FROM rollup_user_days WHERE day = ?"
        return [store.query(sql, [(T0 + timedelta(days=d)).date()])[0][0] for d in days]

    for day in days:
        write(day, users, 0)
    assert store.compact_rollups(max_days=100).days == 0  # first sight: baselines of 30 keys
    for day in days:
        write(day, users[:2], 1)  # 32 rows: under a tenth more
    assert store.compact_rollups(max_days=100).days == 0
    for day in days:
        write(day, users[2:4], 2)  # 34 rows: a tenth more (33) and 4 rows more (3)
    events = store.query("SELECT sum(events) FROM rollup_user_days")
    assert store.compact_rollups(max_days=100).days == 2  # days 0 and 8, rollup_user_days
    assert user_day_rows() == [30, 30, 34]
    assert store.query("SELECT sum(events) FROM rollup_user_days") == events
    write(9, users, 3)  # yesterday at 64 rows: past double its baseline of 30
    # both tables: rollup_daily's one key of day 9 now has a row per write, 4 (baseline 1)
    assert store.compact_rollups(max_days=100).days == 2
    assert user_day_rows() == [30, 30, 30]
    store.close()


def test_days_first_seen_are_counted_a_few_rows_per_call_newest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollups, "COMPACT_MIN_ROWS", 2)
    monkeypatch.setattr(rollups, "FIRST_SIGHT_ROWS", 5)
    store = DuckDBStore(tmp_path / "sights.duckdb")
    for day in range(3):
        for i in range(4):
            when = T0 + timedelta(days=day, minutes=i)
            store.append_events(to_table([event("a", when, "custom", event_name="x")]))
    seen = "SELECT DISTINCT day FROM rollup_compactions ORDER BY day"
    for k in range(3):
        assert store.compact_rollups().days == 2  # one day, both tables
        assert [d for (d,) in store.query(seen)] == [
            (T0 + timedelta(days=day)).date() for day in range(2 - k, 3)
        ]
    assert store.compact_rollups().days == 0
    assert store.query("SELECT count(*) FROM rollup_user_days") == [(3,)]
    store.close()


def test_the_loader_compacts_while_small_rounds_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ingest service writes many small requests through the log; the store's own
    loader, told to look every round, leaves one rollup row per key, and the stored rows are
    all there."""
    import asyncio
    import json

    from avila.storage import loader as loader_module

    monkeypatch.setattr(rollups, "COMPACT_MIN_ROWS", 5)
    monkeypatch.setattr(loader_module, "COMPACT_EVERY_S", 0.0)
    store = DuckDBStore(tmp_path / "loaded.duckdb")
    store.ingest_log_config = IngestLogConfig(tmp_path / "log")
    requests = 60

    async def send() -> None:
        service = IngestService(store)
        await service.start()
        for r in range(requests):
            body = {
                "event_id": f"e{r}",
                "user_id": f"u{r % 3}",
                "timestamp": (T0 + timedelta(hours=r % 30)).isoformat() + "Z",
                "event_type": {"type": "PageView", "data": {"url": f"/p{r % 2}"}},
            }
            result = await service.ingest([json.dumps(body).encode()], "p")
            assert result.accepted == 1
            if r % 2:
                # A reader waiting for its write ends the loader's linger: rounds of two
                # requests. (Reads on the event loop's thread never wait for the loader, so
                # the reads here run in a thread, as a request's reads do.)
                await asyncio.to_thread(store.read_barrier)
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(_bounded, store) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # the loader compacts between rounds and at idle
        await service.close()

    asyncio.run(send())
    assert store.query("SELECT count(*) FROM events") == [(requests,)]
    assert store.query("SELECT sum(events) FROM rollup_user_days") == [(requests,)]
    assert _bounded(store)
    # without compaction, each round would have left a row per key it wrote (about 40 here)
    assert store.query("SELECT count(*) FROM rollup_user_days")[0][0] < 20
    store.close()


def test_an_idle_loader_works_through_a_history_of_days_without_waiting_a_minute_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store upgraded with a history to compact: its days are first seen a few rows per look
    (FIRST_SIGHT_ROWS). An idle loader looks again at its next idle tick while days are left,
    instead of every COMPACT_EVERY_S (here an hour, after a first look due at once)."""
    import asyncio

    from avila.storage import loader as loader_module

    monkeypatch.setattr(rollups, "COMPACT_MIN_ROWS", 1)
    monkeypatch.setattr(rollups, "FIRST_SIGHT_ROWS", 1)  # a day per table per look
    store = DuckDBStore(tmp_path / "history.duckdb")
    users = [f"u{i}" for i in range(5)]
    days = 6
    for day in range(days):  # two writes per day: each key twice, due under any rule
        for minute in range(2):
            when = T0 + timedelta(days=day, minutes=minute)
            store.append_events(to_table([event(u, when, "custom", event_name="x") for u in users]))
    assert store.query("SELECT count(*) FROM rollup_user_days") == [(2 * days * len(users),)]
    store.ingest_log_config = IngestLogConfig(tmp_path / "log")

    async def idle() -> int:
        monkeypatch.setattr(loader_module, "COMPACT_EVERY_S", 0.0)  # the first look: due at once
        service = IngestService(store)
        await service.start()
        monkeypatch.setattr(loader_module, "COMPACT_EVERY_S", 3600.0)  # later ones: an hour
        rows = "SELECT count(*) FROM rollup_user_days"
        deadline = time.monotonic() + 60
        while store.query(rows)[0][0] > days * len(users) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await service.close()
        return int(store.query(rows)[0][0])

    assert asyncio.run(idle()) == days * len(users)  # one row per key, every day
    assert _one_row_per_key(store)
    assert store.query("SELECT sum(events) FROM rollup_user_days") == [(2 * days * len(users),)]
    store.close()
