"""The user key of ``rollup_user_days`` (:data:`avila.storage.rollups.USER_KEY`): every writer
stores the MD5 of the user id as a 128-bit number, checked against Python's ``hashlib`` (an
oracle outside DuckDB); the migration keys a store written before it; reports that group users
by the key answer as the raw events do."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from analytics_data import PROJECT, T0, event, store_before_migration, to_table

from avila.analytics import retention, sessions, stickiness, trends
from avila.storage import rollups
from avila.storage.duckdb.migrations import MIGRATIONS
from avila.storage.duckdb.store import DuckDBStore

IDS = [
    "u1",
    "Zoë 😀 São Paulo",
    "x" * 256,
    "quote ' and \" and \\",
    "ünïcode-ß",
    "tab\tnew\nline",
    "0",
]
EVERY_ROW = [{"property": "event_type", "operator": "is_set"}]


def _md5_number(user_id: str) -> int:
    """DuckDB's ``md5_number``: the digest's 16 bytes as a little-endian unsigned number."""
    return int.from_bytes(hashlib.md5(user_id.encode()).digest(), "little")


def _rows() -> list[dict[str, object]]:
    rows = []
    for d in range(9):
        for i, user in enumerate(IDS):
            if (d + i) % 3:
                rows.append(event(user, T0 + timedelta(days=d, hours=i), country="BR"))
                rows.append(event(user, T0 + timedelta(days=d, hours=i, minutes=5), country="DE"))
    return rows


def _keys(store: DuckDBStore) -> dict[str, set[int]]:
    keys: dict[str, set[int]] = {}
    for user_id, key in store.query("SELECT user_id, user_key FROM rollup_user_days"):
        keys.setdefault(user_id, set()).add(int(key))
    return keys


def _assert_keyed(store: DuckDBStore, users: list[str]) -> None:
    keys = _keys(store)
    assert sorted(keys) == sorted(users)
    assert keys == {user: {_md5_number(user)} for user in users}


def test_every_writer_stores_the_md5_of_the_id_and_compaction_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollups, "COMPACT_MIN_ROWS", 1)
    store = DuckDBStore(tmp_path / "keys.duckdb")
    try:
        rows = _rows()
        for at in range(0, len(rows), 7):  # many small writes: partial rows per key
            store.append_events(to_table(rows[at : at + 7]))  # the Arrow partials' path
        # a revenue the Arrow partials cannot hold takes the SQL path (rollups.add_events)
        huge = event("whale 🐋", T0 + timedelta(days=2), "purchase", order_id="w", revenue=2e15)
        store.append_events(to_table([huge]))
        _assert_keyed(store, [*IDS, "whale 🐋"])
        assert store.compact_rollups(max_days=100).days > 0
        _assert_keyed(store, [*IDS, "whale 🐋"])
        nulls = store.query(
            "SELECT is_nullable FROM information_schema.columns"
            " WHERE table_name = 'rollup_user_days' AND column_name = 'user_key'"
        )
        assert nulls == [("NO",)]
    finally:
        store.close()


def test_migration_16_keys_the_user_days_of_a_store_from_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    conn = store_before_migration(path, 16)
    conn.register("new_events", to_table(_rows()))
    conn.execute("INSERT INTO events BY NAME SELECT * FROM new_events")
    conn.execute("INSERT INTO rollup_daily " + rollups.DAILY_FROM.format(src="events"))
    conn.execute("INSERT INTO rollup_user_days " + rollups._USER_DAYS_FROM.format(src="events"))
    before = conn.execute("SELECT count(*), sum(events) FROM rollup_user_days").fetchall()
    conn.close()

    store = DuckDBStore(path)
    try:
        assert store.query("SELECT max(version) FROM schema_version") == [(MIGRATIONS[-1][0],)]
        assert store.query("SELECT count(*), sum(events) FROM rollup_user_days") == before
        _assert_keyed(store, IDS)
        span = {"start_time": T0, "end_time": T0 + timedelta(days=9)}
        query = {**span, "period": "day", "periods": 9}
        assert retention(store, PROJECT, query) == retention(
            store, PROJECT, {**query, "filters": EVERY_ROW}
        )
        weekly = {**span, "period": "week"}
        assert stickiness(store, PROJECT, weekly) == stickiness(
            store, PROJECT, {**weekly, "filters": EVERY_ROW}
        )
    finally:
        store.close()
    # applied again (a store may record versions out of order): the keys stay as they are
    conn = store_before_migration(tmp_path / "again.duckdb", 17)
    conn.execute("DELETE FROM schema_version WHERE version = 16")
    conn.close()
    DuckDBStore(tmp_path / "again.duckdb").close()


def test_the_user_day_reports_tell_users_apart_by_the_stored_key(tmp_path: Path) -> None:
    """Retention, trends and the sessions report's users read the key, not the id: two users
    given one key (what a hash collision would do) count once from the user days, twice from
    the raw rows."""
    store = DuckDBStore(tmp_path / "collide.duckdb")
    try:
        store.append_events(to_table(_rows()))
        span = {"start_time": T0, "end_time": T0 + timedelta(days=9)}
        query = {**span, "period": "day", "periods": 9}
        daily = {**span, "interval": "day"}
        before = (retention(store, PROJECT, query), trends(store, PROJECT, daily))
        # the sessions report: whole days from the user days, a partial day from raw rows
        partial = {"start_time": T0 + timedelta(hours=3), "end_time": T0 + timedelta(days=9)}
        assert sessions(store, PROJECT, partial) == sessions(store, PROJECT, partial, raw=True)
        assert sessions(store, PROJECT, partial)["users"] == len(IDS)
        store._cursor().execute(
            "UPDATE rollup_user_days SET user_key = ? WHERE user_id = 'u1'", [_md5_number("0")]
        )
        rolled, raw = (
            retention(store, PROJECT, query),
            retention(store, PROJECT, {**query, "filters": EVERY_ROW}),
        )
        assert raw == before[0]
        assert sum(c["size"] for c in raw["cohorts"]) == len(IDS)
        assert sum(c["size"] for c in rolled["cohorts"]) == len(IDS) - 1
        users = [p["users"] for p in trends(store, PROJECT, daily)["series"][0]["data"]]
        raw_users = [
            p["users"]
            for p in trends(store, PROJECT, {**daily, "filters": EVERY_ROW})["series"][0]["data"]
        ]
        assert raw_users == [p["users"] for p in before[1]["series"][0]["data"]]
        # u1 (index 0) and "0" (index 6) are both active on days where (d + 0) % 3 and (d + 6) % 3
        both = [d for d in range(9) if d % 3 and (d + 6) % 3]
        assert both and all(users[d] == raw_users[d] - 1 for d in both)
        assert all(users[d] == raw_users[d] for d in range(9) if d not in both)
        assert sessions(store, PROJECT, partial, raw=True)["users"] == len(IDS)
        assert sessions(store, PROJECT, partial)["users"] == len(IDS) - 1
    finally:
        store.close()
