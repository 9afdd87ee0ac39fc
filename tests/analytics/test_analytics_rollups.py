"""Rollup-backed overview answers equal raw-row answers (avila.storage.rollups).

The raw-row path is the overview with a filter that every row passes (``event_type is_set``):
filters always read raw rows. The rollup path is checked to be the one taken (its reader
returns rows), so a comparison of two raw answers cannot pass for one. Data: random users
over five days, loaded in shuffled batches with late events (a day's rows arriving after
later days), by both write paths (``append_events`` and the ingest-log loader's
``commit_log_batch``), then GDPR erasure and identity stitching.

The rollups are the DuckDB backend's (``Store.has_rollups``), so these tests run on DuckDB; the
suite's other overview tests cover the raw path on every backend.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
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
    store_before_migration,
    to_table,
)

from avila.analytics import erase_user, overview
from avila.analytics.rollup_reads import ACTIVE_DAYS, active_users, overview_aggregates, whole_days
from avila.storage import open_store
from avila.storage.base import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store("duckdb:///" + str(tmp_path / "rollups.duckdb"))
    assert opened.has_rollups
    yield opened
    opened.close()


EVERY_ROW = [{"property": "event_type", "operator": "is_set"}]
REFERRERS = ["https://google.com/", "https://t.co/x", None, "ünïcode.example"]
DEVICES = ["desktop", "mobile", None]

RANGES = [
    (T0, T0 + timedelta(days=5)),  # whole days only
    (T0 + timedelta(hours=7, minutes=13), T0 + timedelta(days=3, hours=5)),  # partial edges
    (T0 + timedelta(days=1), T0 + timedelta(days=2)),  # one day
]


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = random_events(seed, 80, span=timedelta(days=5), grid=timedelta(minutes=7))
    for row in rows:
        row["referrer"] = rng.choice(REFERRERS)
        row["device_type"] = rng.choice(DEVICES)
    # a user with a huge revenue and a user on a day boundary (the last microsecond of a day)
    rows.append(event("whale", T0 + timedelta(days=2), "purchase", order_id="w", revenue=9e12))
    rows.append(event("edge", T0 + timedelta(days=1) - timedelta(microseconds=1), url="/"))
    return rows


def _load_late_and_shuffled(store: Store, rows: list[dict[str, Any]], seed: int) -> None:
    """Batches in random order; the first day's rows come last (late events)."""
    load_late_and_shuffled(store, rows, seed, late_before=T0 + timedelta(days=1), batch_rows=37)


def _raw(store: Store, span: dict[str, Any]) -> dict[str, Any]:
    return overview(store, PROJECT, {**span, "filters": EVERY_ROW})


def _span(lo: datetime, hi: datetime) -> dict[str, Any]:
    return {"start_time": lo, "end_time": hi, "top_n": 3}


def _assert_same(store: Store, lo: datetime, hi: datetime, *, stitched: bool = False) -> None:
    assert overview_aggregates(store, PROJECT, lo, hi, 3, stitched=stitched) is not None
    got, want = overview(store, PROJECT, _span(lo, hi)), _raw(store, _span(lo, hi))
    # (sums of floats in another order: the kept sessions add whole microseconds)
    for key in ("revenue", "avg_session_duration_seconds", "bounce_rate", "pages_per_session"):
        assert got.pop(key) == pytest.approx(want.pop(key), rel=1e-12)
    assert got == want


@pytest.mark.parametrize("seed", [1, 2])
def test_rollup_overview_equals_raw_rows_with_late_events(store: Store, seed: int) -> None:
    rows = _rows(seed)
    _load_late_and_shuffled(store, rows, seed)
    for lo, hi in RANGES:
        _assert_same(store, lo, hi)
    # and an independent plain-Python oracle for the rollup-fed figures
    lo, hi = RANGES[1]
    mine = [r for r in rows if r["project_id"] == PROJECT and lo <= r["ts"] < hi]
    got = overview(store, PROJECT, _span(lo, hi))
    assert got["total_events"] == len(mine)
    assert got["revenue"] == pytest.approx(
        sum(r["revenue"] for r in mine if r["event_type"] == "purchase"), rel=1e-12
    )
    by_type: dict[str, int] = defaultdict(int)
    countries: dict[str, set[str]] = defaultdict(set)
    referrers: dict[str, int] = defaultdict(int)
    for r in mine:
        by_type[r["event_type"]] += 1
        if r.get("country"):
            countries[r["country"]].add(r["user_id"])
        if r.get("referrer"):
            referrers[r["referrer"]] += 1
    assert got["events_by_type"] == dict(by_type)
    want_c = sorted(((c, len(u)) for c, u in countries.items()), key=lambda p: (-p[1], p[0]))
    assert [(c["country"], c["users"]) for c in got["countries"]] == want_c[:3]
    want_r = sorted(referrers.items(), key=lambda p: (-p[1], p[0]))[:3]
    assert [(r["referrer"], r["events"]) for r in got["top_referrers"]] == want_r


@pytest.mark.parametrize("days_before", [0, ACTIVE_DAYS])
def test_users_per_country_and_device_from_the_active_users_pass_or_without_it(
    store: Store, days_before: int
) -> None:
    """The kept way counts users per place in its active-users pass; over a range too long for
    that pass (``ACTIVE_DAYS``) the rollups' own users rows must come back instead."""
    rows = _rows(3)
    rng = random.Random(3)
    for row in rows:  # users seen in several countries and on several devices
        row["country"] = rng.choice(["DE", "FR", "ÜN", None])
    _load_late_and_shuffled(store, rows, 3)
    lo, hi = T0 - timedelta(days=days_before), T0 + timedelta(days=3, hours=5)
    assert (active_users(store, PROJECT, lo, hi, places=True) is None) == (days_before > 0)
    got = overview(store, PROJECT, {**_span(lo, hi), "top_n": 10})
    mine = [r for r in rows if r["project_id"] == PROJECT and lo <= r["ts"] < hi]
    for column, key in (("country", "countries"), ("device_type", "devices")):
        users: dict[str, set[str]] = defaultdict(set)
        for r in mine:
            if r.get(column):
                users[r[column]].add(r["user_id"])
        want = sorted(((v, len(u)) for v, u in users.items()), key=lambda p: (-p[1], p[0]))
        assert len(want) > 1
        assert [(c[column], c["users"]) for c in got[key]] == want[:10]


def test_active_users_over_several_day_words_equal_raw_rows_and_a_python_count(
    store: Store,
) -> None:
    """A range of 150 days takes three 63-day words of day bits per user, and most users are
    active in only some of them (their other words are NULL): daily, weekly and monthly
    active users and the users per place must still be the raw rows' and a plain count's."""
    rows = random_events(7, 90, span=timedelta(days=150), grid=timedelta(hours=13))
    rng = random.Random(7)
    for row in rows:
        row["country"] = rng.choice(["DE", "FR", "ÜN", None])
        row["device_type"] = rng.choice(DEVICES)
    load_late_and_shuffled(store, rows, 7, late_before=T0 + timedelta(days=40), batch_rows=53)
    lo, hi = T0 + timedelta(days=2, hours=3), T0 + timedelta(days=149, hours=20)
    found = active_users(store, PROJECT, lo, hi, places=True)
    assert found is not None
    _assert_same(store, lo, hi)
    mine = [r for r in rows if r["project_id"] == PROJECT and lo <= r["ts"] < hi]
    per: dict[str, dict[Any, set[str]]] = {"day": defaultdict(set), "week": defaultdict(set)}
    months: dict[Any, set[str]] = defaultdict(set)
    for r in mine:
        day = r["ts"].date()
        per["day"][day.isoformat()].add(r["user_id"])
        per["week"][(day - timedelta(days=day.weekday())).isoformat()].add(r["user_id"])
        months[day.replace(day=1).isoformat()].add(r["user_id"])
    got = overview(store, PROJECT, _span(lo, hi))
    assert {d["date"]: d["users"] for d in got["dau"]} == {k: len(v) for k, v in per["day"].items()}
    assert {w["week_start"]: w["users"] for w in got["wau"]} == {
        k: len(v) for k, v in per["week"].items()
    }
    assert {m["month"]: m["users"] for m in got["mau"]} == {k: len(v) for k, v in months.items()}
    assert got["unique_users"] == len({r["user_id"] for r in mine})
    assert len(got["dau"]) > 63  # the test is about more than one word


def test_erased_user_is_forgotten_by_the_rollups(store: Store) -> None:
    rows = _rows(3)
    _load_late_and_shuffled(store, rows, 3)
    lo, hi = RANGES[0]
    before = overview(store, PROJECT, _span(lo, hi))
    deleted = erase_user(store, PROJECT, "whale")["deleted_events"]
    assert deleted == 1
    for lo, hi in RANGES:
        _assert_same(store, lo, hi)
    after = overview(store, PROJECT, _span(*RANGES[0]))
    assert after["total_events"] == before["total_events"] - 1
    kept = [r for r in rows if r["project_id"] == PROJECT and r["user_id"] != "whale"]
    assert after["revenue"] == pytest.approx(
        sum(r["revenue"] for r in kept if r["event_type"] == "purchase"), rel=1e-12
    )
    assert store.query("SELECT count(*) FROM rollup_user_days WHERE user_id = 'whale'") == [(0,)]


def test_stitched_people_are_counted_once_from_the_rollups(store: Store) -> None:
    rows = _rows(4)
    _load_late_and_shuffled(store, rows, 4)
    # u001..u004 turn out to be one person (a chain: u004 -> u003 -> u002 -> u001), in one
    # country that all four share, so that country has 3 users fewer
    stitched = [
        event(f"u00{i}", T0 + timedelta(days=1, hours=i), url="/", country="XX")
        for i in range(1, 5)
    ]
    store.append_events(to_table(stitched))
    whole = {**_span(*RANGES[0]), "top_n": 50}
    before = overview(store, PROJECT, whole)
    assert ("XX", 4) in [(c["country"], c["users"]) for c in before["countries"]]
    for i in range(2, 5):
        link_identity(store, f"u00{i}", f"u00{i - 1}")
    for lo, hi in RANGES:
        _assert_same(store, lo, hi, stitched=True)
    after = overview(store, PROJECT, whole)
    assert ("XX", 1) in [(c["country"], c["users"]) for c in after["countries"]]
    assert after["unique_users"] == before["unique_users"] - 3
    # erasing the person erases the ids that resolve to them, in the rollups too
    erase_user(store, PROJECT, "u001")
    for lo, hi in RANGES:
        _assert_same(store, lo, hi, stitched=False)


def test_a_write_that_bypasses_the_rollups_falls_back_to_raw_rows(store: Store) -> None:
    _load_late_and_shuffled(store, _rows(5), 5)
    lo, hi = RANGES[0]
    store.execute(
        "INSERT INTO events (project_id, event_id, user_id, ts, received_at, event_type, url)"
        " VALUES (?, 'sneaky', 'ghost', ?, ?, 'page_view', '/')",
        [PROJECT, T0 + timedelta(days=1), T0 + timedelta(days=1)],
    )
    assert overview_aggregates(store, PROJECT, lo, hi, 3, stitched=False) is None
    got = overview(store, PROJECT, _span(lo, hi))
    assert got == _raw(store, _span(lo, hi))
    assert (
        got["total_events"]
        == store.query(
            "SELECT count(*) FROM events WHERE project_id = ? AND ts >= ? AND ts < ?",
            [PROJECT, lo, hi],
        )[0][0]
    )


def test_whole_days() -> None:
    d = datetime(2024, 3, 1)
    assert whole_days(d, d + timedelta(days=2)) == (d, d + timedelta(days=2))
    assert whole_days(d + timedelta(hours=1), d + timedelta(days=2, hours=1)) == (
        d + timedelta(days=1),
        d + timedelta(days=2),
    )
    assert whole_days(d + timedelta(hours=1), d + timedelta(days=1, hours=1)) is None


def test_revenue_beyond_the_rollups_decimal_is_stored_and_answered_from_raw_rows(
    store: Store,
) -> None:
    # The API bounds revenue to 1e15; a direct store write (migrate-store, old data) may not.
    rows = _rows(5)
    rows.append(
        event("huge", T0 + timedelta(days=1, hours=3), "purchase", order_id="h", revenue=1e308)
    )
    _load_late_and_shuffled(store, rows, 5)
    lo, hi = RANGES[0]
    assert overview_aggregates(store, PROJECT, lo, hi, 3, stitched=False) is None
    assert overview(store, PROJECT, _span(lo, hi)) == _raw(store, _span(lo, hi))
    # days without the huge row still read the rollups
    day3 = (T0 + timedelta(days=3), T0 + timedelta(days=4))
    _assert_same(store, *day3)


def test_migration_10_recomputes_revenue_written_with_the_plain_cast(tmp_path: Path) -> None:
    """Rollups written before migration 10 hold ``revenue::DECIMAL(38, 6)``, which DuckDB
    computes from the inexact double ``revenue * 1e6``; an erase now negates the exact decimal,
    so the migration recomputes the stored per-type rows: afterwards a whole day's revenue is
    exact, and erasing the big spender leaves exactly the other purchases."""

    from avila.storage import rollups

    path = tmp_path / "old.duckdb"
    conn = store_before_migration(path, 10)
    day = T0 + timedelta(days=1)
    rows = [
        event(
            "whale", day + timedelta(hours=2), "purchase", order_id="w", revenue=999999999999999.0
        ),
        event("small", day + timedelta(hours=3), "purchase", order_id="s1", revenue=5.25),
        event("small", day + timedelta(hours=4), "purchase", order_id="s2", revenue=0.01),
        event("small", day + timedelta(hours=5), url="/"),
    ]
    conn.register("new_events", to_table(rows))
    conn.execute("INSERT INTO events BY NAME SELECT * FROM new_events")
    old_daily = rollups.DAILY_FROM.replace(rollups.REVENUE_DECIMAL, "revenue::DECIMAL(38, 6)")
    assert old_daily != rollups.DAILY_FROM
    conn.execute("INSERT INTO rollup_daily " + old_daily.format(src="events"))
    conn.execute("INSERT INTO rollup_user_days " + rollups._USER_DAYS_FROM.format(src="events"))
    (stored,) = conn.execute("SELECT sum(revenue) FROM rollup_daily").fetchone()
    assert str(stored) == "1000000000000004.211424"  # the whale as 999999999999998.951424
    conn.close()

    store = open_store("duckdb:///" + str(path))
    try:
        span = (day, day + timedelta(days=1))
        assert overview_aggregates(store, PROJECT, *span, 3, stitched=False) is not None
        assert overview(store, PROJECT, _span(*span))["revenue"] == 1000000000000004.25
        assert store.query("SELECT count(*) FROM rollup_daily WHERE kind = 'type'") == [(2,)]
        erase_user(store, PROJECT, "whale")
        assert overview_aggregates(store, PROJECT, *span, 3, stitched=False) is not None
        assert overview(store, PROJECT, _span(*span))["revenue"] == 5.26
        (left,) = store.query(
            "SELECT sum(revenue) FROM rollup_daily WHERE event_type = 'purchase'"
        )[0]
        assert str(left) == "5.260000"
    finally:
        store.close()
