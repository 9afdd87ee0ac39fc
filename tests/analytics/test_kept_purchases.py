"""RFM read from the kept purchases equals RFM read from the events (avila.storage.purchase_table).

The kept way is checked to be the one taken (``_purchases_source`` returns the kept relation),
so two raw answers cannot pass for one; ``raw=True`` reads the events. Data: random users over
five days (ties on a coarse grid, resent purchases with the same order, purchases without an
order id sent twice under one event id, unicode ids, a huge revenue), loaded in shuffled
batches with late events by both write paths, then GDPR erasure, identity stitching and a
write that goes around the kept table. The pandas oracle is the RFM test's
(``analytics_oracles.rfm_users``, which the RFM test's oracle uses too).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from analytics_data import (
    OTHER_PROJECT,
    PROJECT,
    T0,
    event,
    link_identity,
    load_late_and_shuffled,
    random_events,
    store_before_migration,
    to_table,
)
from analytics_oracles import rfm_users

from avila.analytics import erase_user
from avila.analytics.common import events_source
from avila.analytics.rfm import _purchases_source, score_table
from avila.storage import open_store, purchase_table
from avila.storage.base import Store

WINDOWS = [  # (reference date, window days): whole days, partial edges, a window without rows
    (T0 + timedelta(days=5), 5),
    (T0 + timedelta(days=3, hours=5, minutes=13), 2),
    (T0 - timedelta(days=1), 3),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store("duckdb:///" + str(tmp_path / "purchases.duckdb"))
    yield opened
    opened.close()


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = random_events(seed, 90, span=timedelta(days=5), grid=timedelta(minutes=7))
    for k in range(12):  # purchases without an order id: each its own order, unless resent
        at = T0 + timedelta(hours=rng.randint(0, 119))
        row = event(f"ü{k % 4}", at, "purchase", revenue=round(rng.uniform(1, 50), 2))
        rows.append(row)
        if k % 3 == 0:  # the same event id again (a retry past the dedup window)
            rows.append({**row, "ts": at + timedelta(seconds=1)})
    rows.append(event("whale", T0 + timedelta(days=2), "purchase", order_id="w", revenue=9e14))
    rows.append(  # the last microsecond of a day
        event("edge", T0 + timedelta(days=1) - timedelta(microseconds=1), "purchase", order_id="e")
    )
    return rows


def _load(store: Store, rows: list[dict[str, Any]], seed: int) -> None:
    load_late_and_shuffled(store, rows, seed, late_before=T0 + timedelta(days=1), batch_rows=41)


def _query(ref: datetime, days: int) -> dict[str, Any]:
    return {"reference_date": ref, "window_days": days}


def _kept_is_read(store: Store, ref: datetime, days: int) -> bool:
    source = events_source(store, PROJECT)
    found = _purchases_source(store, PROJECT, source, ref - timedelta(days=days), ref)
    return "kept_purchases" in found


def _oracle(rows: list[dict[str, Any]], ref: datetime, days: int) -> dict[str, Any]:
    """Per user (sorted): last purchase, orders, money, as pandas reads the rows as sent."""
    users = rfm_users(rows, ref, days, PROJECT)
    return {
        "user_id": list(users.index),
        "frequency": users.f.tolist(),
        "monetary": users.m.tolist(),
        "recency_us": [(ref - t) // timedelta(microseconds=1) for t in users["last"]],
    }


def _assert_same(store: Store, rows: list[dict[str, Any]] | None = None) -> None:
    for ref, days in WINDOWS:
        assert _kept_is_read(store, ref, days)
        got = score_table(store, PROJECT, _query(ref, days))
        want = score_table(store, PROJECT, _query(ref, days), raw=True)
        for key in ("user_id", "recency_us", "frequency", "monetary", "r", "f", "m", "segment"):
            assert list(got[key]) == list(want[key]), key
        if rows is not None:
            oracle = _oracle(rows, ref, days)
            assert got["user_id"] == oracle["user_id"]
            assert list(got["frequency"]) == oracle["frequency"]
            assert list(got["recency_us"]) == oracle["recency_us"]
            assert list(got["monetary"]) == pytest.approx(oracle["monetary"], rel=1e-12)


@pytest.mark.parametrize("seed", [1, 2])
def test_rfm_from_kept_purchases_equals_raw_rows_and_pandas(store: Store, seed: int) -> None:
    rows = _rows(seed)
    _load(store, rows, seed)
    assert sum(1 for r in rows if r["event_type"] == "purchase" and r["project_id"] == PROJECT)
    _assert_same(store, rows)
    # another project's purchases are kept too, and never show in this one's answer
    store.append_events(
        to_table([event("x", T0 + timedelta(hours=1), "purchase", project_id=OTHER_PROJECT)])
    )
    assert store.query(
        "SELECT count(*) FROM kept_purchases WHERE project_id = ?", [OTHER_PROJECT]
    ) == [(1,)]
    _assert_same(store, rows)


def test_an_erased_user_is_forgotten_by_the_kept_purchases(store: Store) -> None:
    rows = _rows(3)
    _load(store, rows, 3)
    assert erase_user(store, PROJECT, "whale")["deleted_events"] == 1
    assert store.query("SELECT count(*) FROM kept_purchases WHERE user_id = 'whale'") == [(0,)]
    _assert_same(store, [r for r in rows if r["user_id"] != "whale"])


@pytest.mark.parametrize("map_current", [True, False])
def test_a_stitched_project_reads_the_kept_purchases_by_person(
    store: Store, map_current: bool
) -> None:
    rows = _rows(4)
    _load(store, rows, 4)
    link_identity(store, "u002", "u001")
    link_identity(store, "ü1", "u001")  # a chain of two links into one person
    if not map_current:  # a link the map has not taken in yet: reads resolve recursively
        store.execute(
            "INSERT INTO identities (project_id, anonymous_id, user_id, ts, received_at, source,"
            " event_id) VALUES (?, 'u003', 'u001', ?, ?, 'test', 'link-u003')",
            [PROJECT, T0, T0],
        )
    source = events_source(store, PROJECT)
    assert source != "events" and ("live" in source) != map_current
    person = {"u002": "u001", "ü1": "u001", **({} if map_current else {"u003": "u001"})}
    mapped = [{**r, "user_id": person.get(r["user_id"], r["user_id"])} for r in rows]
    _assert_same(store, mapped)
    ref, days = WINDOWS[0]
    got = score_table(store, PROJECT, _query(ref, days))
    assert "u002" not in got["user_id"] and "u001" in got["user_id"]


def test_a_write_around_the_kept_purchases_falls_back_to_the_events(store: Store) -> None:
    rows = _rows(5)
    _load(store, rows, 5)
    ref, days = WINDOWS[0]
    assert _kept_is_read(store, ref, days)
    store.execute(
        "INSERT INTO events (project_id, event_id, user_id, ts, received_at, event_type,"
        " order_id, revenue) VALUES (?, 'sneaky', 'ghost', ?, ?, 'purchase', 'g', 5.0)",
        [PROJECT, T0 + timedelta(days=1), T0 + timedelta(days=1)],
    )
    assert not _kept_is_read(store, ref, days)
    assert "ghost" in score_table(store, PROJECT, _query(ref, days))["user_id"]
    # a purchase kept without its event (the rollups agree with the events): also refused
    store.execute("DELETE FROM events WHERE event_id = 'sneaky'")
    assert _kept_is_read(store, ref, days)
    store.execute(
        "INSERT INTO kept_purchases VALUES (?, 'ghost', ?, 'sneaky', 'g', 5.0)",
        [PROJECT, T0 + timedelta(days=1)],
    )
    assert not _kept_is_read(store, ref, days)
    assert "ghost" not in score_table(store, PROJECT, _query(ref, days))["user_id"]


def test_filters_read_the_events(store: Store) -> None:
    rows = _rows(6)
    _load(store, rows, 6)
    ref, days = WINDOWS[0]
    only = [{"property": "country", "operator": "eq", "value": "DE"}]
    got = score_table(store, PROJECT, {**_query(ref, days), "filters": only})
    want = {
        r["user_id"]
        for r in rows
        if r["project_id"] == PROJECT
        and r["event_type"] == "purchase"
        and r.get("country") == "DE"
        and ref - timedelta(days=days) <= r["ts"] < ref
    }
    assert set(got["user_id"]) == want and want


def test_migration_15_keeps_the_purchases_already_stored(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    conn = store_before_migration(path, 15)
    rows = _rows(7)
    conn.from_arrow(to_table(rows)).insert_into("events")
    conn.close()
    store = open_store("duckdb:///" + str(path))
    try:
        columns = ", ".join(purchase_table.COLUMNS)
        kept = store.query(f"SELECT {columns} FROM kept_purchases ORDER BY ALL")
        bought = store.query(
            f"SELECT {columns} FROM events WHERE event_type = 'purchase' ORDER BY ALL"
        )
        assert kept == bought and len(kept) > 20
    finally:
        store.close()
