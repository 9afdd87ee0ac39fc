"""Sessions kept as events are written (avila.storage.session_table) answer exactly as raw rows do.

Every write path keeps them: single appends, loader rounds of several pieces, bulk import,
the migration that builds them from stored events, and erasure. The data has what breaks
incremental sessions: late events inside and between stored chains, chains merged by a late
event, a chain over 24 h (the cut is measured from the chain's first event), client
session ids whose events arrive in several writes, ties, unicode ids, and ranges whose edges
cut chains. Each answer is compared with the raw-row path (itself checked against the plain
Python oracle in test_analytics_sessions_overview) and, for the whole range, the oracle.
"""

from __future__ import annotations

import json
import random
import statistics
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from analytics_data import PROJECT, event, to_table
from analytics_oracles import sessions_oracle

from avila.analytics import overview, session_reads, sessions
from avila.analytics.overview import _kept_users_and_sessions
from avila.analytics.rollup_reads import whole_days
from avila.export.bulk import bulk_import
from avila.identity import IDENTITY_SCHEMA
from avila.storage import session_table
from avila.storage.duckdb.migrations import MIGRATIONS
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.session_table import build

T0 = datetime(2025, 3, 1)
ZONES = ["UTC", "Asia/Kolkata", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]


def _writes(seed: int) -> list[list[dict[str, Any]]]:
    """Twenty writes: mostly recent events, some late ones anywhere in ten days, keyed
    sessions spread over writes, a bot with an event every 20 min (one chain of days), ties."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(30)] + ["ü-ñ", "用户"]
    out = []
    for w in range(20):
        rows = []
        for _ in range(rng.randint(1, 120)):
            if rng.random() < 0.3:
                ts = T0 + timedelta(minutes=10 * rng.randint(0, 10 * 144))  # late, on a grid
            else:
                ts = T0 + timedelta(hours=12 * w, seconds=rng.randint(0, 43_200))
            sid = f"s{rng.randint(0, 4)}" if rng.random() < 0.2 else None
            kind = rng.choice(["page_view", "page_view", "click", "purchase"])
            rows.append(event(rng.choice(users), ts, kind, session_id=sid))
        rows += [
            event("bot", T0 + timedelta(minutes=20 * k), "page_view")
            for k in range(36 * w, 36 * w + 36)
        ]
        rng.shuffle(rows)
        out.append(rows)
    return out


WRITES = _writes(11)
ALL_ROWS = [r for rows in WRITES for r in rows]


def _ranges(seed: int, n: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = [
        {
            "start_time": (T0 - timedelta(days=1)).isoformat(),
            "end_time": (T0 + timedelta(days=12)).isoformat(),
        }
    ]
    for _ in range(n):
        start = T0 + timedelta(seconds=rng.randint(-86_400, 11 * 86_400))
        end = start + timedelta(seconds=rng.randint(60, 6 * 86_400))
        out.append(
            {
                "start_time": start.isoformat(),
                "end_time": end.isoformat(),
                "timezone": rng.choice(ZONES),
            }
        )
    out.append(
        {
            "start_time": (T0 + timedelta(days=30)).isoformat(),
            "end_time": (T0 + timedelta(days=31)).isoformat(),
        }
    )
    return out


RANGES = _ranges(5, 25)


def _same(store: DuckDBStore, query: dict[str, str]) -> dict[str, Any]:
    """The kept answer (checked to come from the kept tables) after checking it equals the
    raw one."""
    q = session_reads.SessionsQuery(
        **{k: v for k, v in query.items() if k != "start_time" and k != "end_time"}
    )  # type: ignore[arg-type]
    assert session_reads.answers(store, PROJECT, q)
    kept, raw = sessions(store, PROJECT, query), sessions(store, PROJECT, query, raw=True)
    for got in (kept, raw):
        for key in ("avg_duration_seconds", "bounce_rate", "pages_per_session"):
            got[key] = pytest.approx(got[key], rel=1e-12)
        for day in got["by_day"]:
            day["avg_duration_seconds"] = pytest.approx(day["avg_duration_seconds"], rel=1e-12)
    assert kept == raw, query
    return kept


def _kept_used(store: DuckDBStore, query: dict[str, str]) -> bool:
    start, end = (
        datetime.fromisoformat(query["start_time"]),
        datetime.fromisoformat(query["end_time"]),
    )
    return session_reads.kept_totals(store, PROJECT, start, end, None) is not None


def _check_all(store: DuckDBStore) -> None:
    for query in RANGES:
        _same(store, query)
        assert _kept_used(store, query)


@pytest.fixture
def duck(tmp_path: Path) -> DuckDBStore:
    opened = DuckDBStore(tmp_path / "kept.duckdb")
    yield opened
    opened.close()


def test_single_appends_keep_sessions_equal_to_raw_rows_and_the_oracle(duck: DuckDBStore) -> None:
    for rows in WRITES:
        duck.append_events(to_table(rows))
    _check_all(duck)
    whole = RANGES[0]
    want = sessions_oracle(
        ALL_ROWS,
        PROJECT,
        datetime.fromisoformat(whole["start_time"]),
        datetime.fromisoformat(whole["end_time"]),
    )
    got = sessions(duck, PROJECT, whole)
    assert got["sessions"] == len(want)
    assert got["users"] == len({w[0] for w in want})
    assert got["avg_duration_seconds"] == pytest.approx(
        statistics.fmean((e - s).total_seconds() for _, s, e, _, _ in want)
    )
    # the bot's chain is cut every 24 h from its first event, not per write
    bot = [w for w in want if w[0] == "bot"]
    assert max((e - s).total_seconds() for _, s, e, _, _ in bot) < 86_400
    stored = duck.query("SELECT count(*) FROM kept_sessions WHERE user_id = 'bot'")[0][0]
    assert stored == len(bot)


def _rebuilt(store: DuckDBStore) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The stored sessions (pending writes cut first), and what a build from the events
    gives (rolled back)."""
    store.settle_kept_sessions()
    assert store.query("SELECT count(*) FROM kept_pending") == [(0,)]
    cursor = store._cursor()
    read = "SELECT * EXCLUDE (project_id) FROM kept_sessions ORDER BY ALL"
    kept = cursor.execute(read).fetchall()
    cursor.execute("BEGIN TRANSACTION")
    try:
        cursor.execute("DELETE FROM kept_sessions")
        cursor.execute("DELETE FROM kept_keyed_sessions")
        build(cursor)
        return kept, cursor.execute(read).fetchall()
    finally:
        cursor.execute("ROLLBACK")


def test_every_write_leaves_the_sessions_a_rebuild_gives(duck: DuckDBStore) -> None:
    """Incremental upkeep (the live tail and late events) stores exactly what cutting all
    events again stores, write after write; ties at a chain's end come in later writes."""
    tied = T0 + timedelta(days=3, hours=1)
    ties = [[event("tie", tied, "page_view") for _ in range(3)] for _ in range(3)]
    for rows in [*WRITES[:8], *ties, *WRITES[8:12]]:
        duck.append_events(to_table(rows))
        kept, rebuilt = _rebuilt(duck)
        assert kept == rebuilt


def test_loader_rounds_of_several_pieces_keep_the_same_sessions(duck: DuckDBStore) -> None:
    position = duck.log_position()
    for i in range(0, len(WRITES), 4):
        transaction = duck.open_log_round(position)
        for rows in WRITES[i : i + 4]:
            transaction.add(to_table(rows))
        position += 1
        transaction.commit(position)
        kept, rebuilt = _rebuilt(duck)
        assert kept == rebuilt
    _check_all(duck)


def test_migration_builds_the_tables_from_stored_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store from before migration 12 (its tables and version rows taken away) gets the
    kept sessions built when it is opened, from the events it holds."""
    path = tmp_path / "old.duckdb"
    old = DuckDBStore(path)
    for rows in WRITES:
        old.append_events(to_table(rows))
    cursor = old._cursor()
    cursor.execute("DROP TABLE kept_sessions")
    cursor.execute("DROP TABLE kept_keyed_sessions")
    cursor.execute("DROP TABLE kept_pending")
    cursor.execute("DELETE FROM schema_version WHERE version >= 12")
    old.close()
    monkeypatch.setattr(session_table, "BUILD_SLICE_ROWS", 500)  # several passes over users
    with caplog.at_level("INFO", logger="avila.storage.migrations"):
        upgraded = DuckDBStore(path)
    try:
        passes = [r for r in caplog.records if getattr(r, "progress", "").startswith("sessions")]
        assert len(passes) > 1
        assert upgraded.query("SELECT max(version) FROM schema_version") == [(MIGRATIONS[-1][0],)]
        kept, rebuilt = _rebuilt(upgraded)
        assert kept == rebuilt and len(kept) > 100
        _check_all(upgraded)
    finally:
        upgraded.close()


def _pending(store: DuckDBStore) -> int:
    return int(store.query("SELECT count(*) FROM kept_pending")[0][0])


def test_small_writes_wait_and_a_read_cuts_them(duck: DuckDBStore) -> None:
    """Writes below SETTLE_ROWS only append to kept_pending; the first sessions read cuts them
    all, and every answer equals the raw rows'."""
    for rows in WRITES:
        duck.append_events(to_table(rows))
    anonymous = sum(1 for r in ALL_ROWS if not r.get("session_id"))
    assert _pending(duck) == anonymous
    assert duck.query("SELECT count(*) FROM kept_sessions") == [(0,)]
    _check_all(duck)
    assert _pending(duck) == 0


def test_pending_rows_go_with_every_cut(
    duck: DuckDBStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a small SETTLE_ROWS some writes cut and some wait; erasure, a restart and a bulk
    import (which cuts its rows at once) come while rows wait. Every cut takes the waiting
    rows with it, so nothing is cut twice: the stored sessions are always a rebuild's."""
    monkeypatch.setattr(session_table, "SETTLE_ROWS", 150)
    seen = set()
    for i, rows in enumerate(WRITES[:10]):
        duck.append_events(to_table(rows))
        seen.add(_pending(duck) > 0)
        if i == 4:
            duck.erase_users(PROJECT, ["u3"], links=False)
    assert seen == {True, False}  # (the protocol above makes both happen)
    assert _pending(duck) > 0
    duck.close()
    reopened = DuckDBStore(tmp_path / "kept.duckdb")  # the count of waiting rows survives
    try:
        assert reopened._sessions is not None and reopened._sessions.pending == _pending(reopened)
        path = tmp_path / "more.ndjson"
        with path.open("w") as out:
            for r in WRITES[10]:
                body = {
                    "event_id": r["event_id"],
                    "user_id": r["user_id"],
                    "event_type": "click" if r["event_type"] == "purchase" else r["event_type"],
                    "timestamp": r["ts"].isoformat() + "Z",
                }
                out.write(json.dumps(body) + "\n")
        bulk_import(path, "ndjson", reopened, PROJECT)
        assert _pending(reopened) == 0
        for rows in WRITES[11:]:
            reopened.append_events(to_table(rows))
        kept, rebuilt = _rebuilt(reopened)
        assert kept == rebuilt
        _check_all(reopened)
    finally:
        reopened.close()


def test_rows_that_waited_long_enough_are_cut_by_the_next_write(
    duck: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_table, "SETTLE_SECONDS", 0.0)
    duck.append_events(to_table(WRITES[0]))
    assert _pending(duck) > 0  # nothing waited before it
    duck.append_events(to_table(WRITES[1]))
    assert _pending(duck) == 0
    kept, rebuilt = _rebuilt(duck)
    assert kept == rebuilt


def test_erased_users_leave_the_kept_sessions(duck: DuckDBStore) -> None:
    for rows in WRITES:
        duck.append_events(to_table(rows))
    duck.settle_kept_sessions()
    more = [
        event(u, T0 + timedelta(days=2, minutes=m), "click") for u in ("u3", "u1") for m in (5, 9)
    ]
    duck.append_events(to_table(more))  # (and some waiting to be cut)
    assert _pending(duck) > 0
    duck.erase_users(PROJECT, ["bot", "u3", "ü-ñ"], links=False)
    left = duck.query(
        "SELECT count(*) FROM kept_sessions WHERE user_id IN ('bot', 'u3', 'ü-ñ')"
        " UNION ALL SELECT count(*) FROM kept_keyed_sessions WHERE user_id IN ('bot', 'u3', 'ü-ñ')"
        " UNION ALL SELECT count(*) FROM kept_pending WHERE user_id IN ('bot', 'u3', 'ü-ñ')"
    )
    assert left == [(0,), (0,), (0,)]
    _check_all(duck)


def test_bulk_import_keeps_sessions(duck: DuckDBStore, tmp_path: Path) -> None:
    duck.append_events(to_table(WRITES[0]))
    path = tmp_path / "more.ndjson"

    with path.open("w") as out:
        for rows in WRITES[1:]:
            for r in rows:
                body = {
                    "event_id": r["event_id"],
                    "user_id": r["user_id"],
                    "event_type": "click" if r["event_type"] == "purchase" else r["event_type"],
                    "timestamp": r["ts"].isoformat() + "Z",
                    "data": json.dumps({"url": "/"}),
                }
                if r.get("session_id"):
                    body["session_id"] = r["session_id"]
                out.write(json.dumps(body) + "\n")
    summary = bulk_import(path, "ndjson", duck, PROJECT)
    assert (summary.accepted, summary.rejections) == (len(ALL_ROWS) - len(WRITES[0]), [])
    kept, rebuilt = _rebuilt(duck)
    assert kept == rebuilt
    _check_all(duck)


def test_a_write_that_bypasses_the_tables_makes_reads_take_raw_rows(duck: DuckDBStore) -> None:
    for rows in WRITES[:5]:
        duck.append_events(to_table(rows))
    query = RANGES[0]
    assert _kept_used(duck, query)
    late = to_table([event("u1", T0 + timedelta(hours=30), "page_view")])
    duck._cursor().from_arrow(late).insert_into("events")  # not through insert_events
    assert not _kept_used(duck, query)
    assert sessions(duck, PROJECT, query) == sessions(duck, PROJECT, query, raw=True)


def test_questions_the_tables_cannot_answer_read_raw_rows(duck: DuckDBStore) -> None:
    duck.append_events(to_table(WRITES[0]))
    for extra in (
        {"timeout_seconds": 600},
        {"max_session_seconds": 3600},
        {"filters": [{"property": "event_type", "operator": "eq", "value": "click"}]},
    ):
        q = session_reads.SessionsQuery(**extra)  # type: ignore[arg-type]
        assert not session_reads.answers(duck, PROJECT, q)
    link = {
        "project_id": [PROJECT],
        "anonymous_id": ["u1"],
        "user_id": ["u2"],
        "ts": pa.array([T0], pa.timestamp("us")),
        "received_at": pa.array([T0], pa.timestamp("us")),
        "source": ["test"],
        "event_id": ["link-1"],
    }
    duck.append_table("identities", pa.table(link, schema=IDENTITY_SCHEMA))
    assert not session_reads.answers(duck, PROJECT, session_reads.SessionsQuery())


def _same_overview(store: DuckDBStore, query: dict[str, str]) -> None:
    kept, raw = overview(store, PROJECT, query), overview(store, PROJECT, query, raw=True)
    for got in (kept, raw):
        for key in ("avg_session_duration_seconds", "bounce_rate", "pages_per_session"):
            got[key] = pytest.approx(got[key], rel=1e-12)
    assert kept == raw, query


def test_the_overview_reads_kept_sessions_and_rollups_in_utc(duck: DuckDBStore) -> None:
    for rows in WRITES:
        duck.append_events(to_table(rows))
    duck.erase_users(PROJECT, ["u7"], links=False)
    utc = [q for q in RANGES if q.get("timezone", "UTC") == "UTC"]
    nine_days = {"start_time": T0.isoformat(), "end_time": (T0 + timedelta(days=9)).isoformat()}
    for query in [*utc, nine_days, {**nine_days, "timezone": "Europe/London"}]:
        _same_overview(duck, query)
        start = datetime.fromisoformat(query["start_time"])
        end = datetime.fromisoformat(query["end_time"])
        if whole_days(start, end) is not None:  # (the rollups answer)
            assert _kept_users_and_sessions(duck, PROJECT, start, end) is not None
    # another zone's days are not UTC days: raw rows, the same answer as ever
    kolkata = {**nine_days, "timezone": "Asia/Kolkata"}
    assert overview(duck, PROJECT, kolkata) == overview(duck, PROJECT, kolkata, raw=True)


def test_active_users_over_ranges_of_several_bit_words(duck: DuckDBStore) -> None:
    """Days 63 and 126 of a range open a new 63-day word of the per-user day bits."""
    rng = random.Random(3)
    rows = [
        event(f"w{rng.randint(0, 25)}", T0 + timedelta(hours=rng.randint(0, 24 * 140)))
        for _ in range(900)
    ]
    duck.append_events(to_table(rows))
    for days, shift in ((63, 0), (64, 5), (130, 7.5), (140, 0.25)):
        start = T0 + timedelta(hours=shift)
        query = {
            "start_time": start.isoformat(),
            "end_time": (start + timedelta(days=days)).isoformat(),
        }
        _same_overview(duck, query)
        assert _kept_users_and_sessions(duck, PROJECT, start, start + timedelta(days=days))


def test_the_loader_cuts_waiting_rows_when_it_is_idle(tmp_path: Path) -> None:
    """Events acknowledged on the ingest log and loaded in small rounds wait to be cut; a
    second after the last round the loader cuts them, with no read asking for it."""
    import asyncio

    from avila.ingest.service import IngestService
    from avila.storage.ingest_log import IngestLogConfig
    from avila.storage.loader import IDLE_CUT_S

    store = DuckDBStore(tmp_path / "idle.duckdb")
    store.ingest_log_config = IngestLogConfig(tmp_path / "log")
    bodies = [
        json.dumps(
            {
                "event_id": f"idle-{i}",
                "user_id": f"u{i % 3}",
                "timestamp": f"2026-01-10T10:{i:02d}:00Z",
                "event_type": {"type": "PageView", "data": {"url": "/"}},
            }
        ).encode()
        for i in range(12)
    ]
    seen: list[int] = []

    async def ingest_then_watch() -> None:
        service = IngestService(store)
        await service.start()
        assert (await service.ingest(bodies, PROJECT)).accepted == len(bodies)
        deadline = asyncio.get_running_loop().time() + 30 * IDLE_CUT_S
        while asyncio.get_running_loop().time() < deadline:
            loaded = store.query("SELECT count(*) FROM events")[0][0]
            waiting = _pending(store)
            seen.append(waiting)
            if loaded == len(bodies) and waiting == 0:
                break
            await asyncio.sleep(0.05)
        await service.close()

    try:
        asyncio.run(ingest_then_watch())
        assert seen[-1] == 0 and any(seen)  # the rows waited, then were cut without a read
        assert store.query("SELECT sum(events) FROM kept_sessions") == [(len(bodies),)]
        kept, rebuilt = _rebuilt(store)
        assert kept == rebuilt
    finally:
        store.close()
