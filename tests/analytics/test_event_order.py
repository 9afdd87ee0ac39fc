"""Finished days of events rewritten in (project, user, time) order (avila.storage.event_order).

The rewrite must keep every row as it was (a multiset compared with a copy taken before), lay
each ordered day's rows out in that order, leave today and yesterday alone, and change no
report: every report is asked before and after on generated data with late and shuffled
writes, duplicates, identity links, an erasure, unicode ids and a huge revenue.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import date, timedelta
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

from avila.analytics import (
    erase_user,
    funnel,
    overview,
    paths,
    retention,
    rfm,
    sessions,
    trends,
    user_profile,
)
from avila.ingest.service import IngestService
from avila.storage import event_order, rollups
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.ingest_log import IngestLogConfig

DAYS = 5
EVERY_ROW = [{"property": "event_type", "operator": "is_set"}]


def _rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = random_events(seed, 60, span=timedelta(days=DAYS), grid=timedelta(minutes=7))
    for row in rows:
        row["device_type"] = rng.choice(["desktop", "mobile", None])
    rows.append(event("whale", T0 + timedelta(days=2), "purchase", order_id="w", revenue=9e12))
    rows.append(event("ユーザー", T0 + timedelta(days=1) - timedelta(microseconds=1), url="/ü"))
    rows.append(event("ユーザー", T0 + timedelta(days=1), url="/ü"))  # midnight: the next day
    return rows


def _answers(store: DuckDBStore) -> dict[str, Any]:
    whole = {"start_time": T0, "end_time": T0 + timedelta(days=DAYS)}
    part = {"start_time": T0 + timedelta(hours=5), "end_time": T0 + timedelta(days=3, hours=2)}
    steps = [
        {"name": "view", "condition_type": "page_view", "condition_value": "/", "match": "prefix"},
        {"name": "cart", "condition_type": "add_to_cart", "condition_value": ""},
        {"name": "buy", "condition_type": "purchase", "condition_value": ""},
    ]
    out: dict[str, Any] = {}
    for name, span in (("whole", whole), ("part", part)):
        out[f"overview {name}"] = overview(store, PROJECT, {**span, "top_n": 50})
        out[f"overview raw {name}"] = overview(store, PROJECT, {**span, "filters": EVERY_ROW})
        out[f"sessions {name}"] = sessions(store, PROJECT, span)
        out[f"trends {name}"] = trends(store, PROJECT, {**span, "interval": "day"})
        for mode in ("ordered", "strict_order", "unordered"):
            out[f"funnel {mode} {name}"] = funnel(
                store, PROJECT, {**span, "steps": steps, "mode": mode, "breakdown": "country"}
            )
        out[f"paths {name}"] = paths(store, PROJECT, span)
    out["retention"] = retention(store, PROJECT, {**whole, "period": "day", "periods": DAYS})
    out["rfm"] = rfm(store, PROJECT, {"reference_date": whole["end_time"], "members": 50})
    for user in ("u001", "u003", "ユーザー", "whale"):
        out[f"profile {user}"] = user_profile(store, PROJECT, user)
    return out


def _physically_ordered(store: DuckDBStore, day: date) -> bool:
    """The day's rows, in the order they lie in the table, are in :data:`event_order.ORDER`."""
    rows = store.query(
        "SELECT project_id, user_id, ts FROM events WHERE ts::DATE = ? ORDER BY rowid", [day]
    )
    return bool(rows) and rows == sorted(rows)


def test_ordering_finished_days_keeps_every_row_and_changes_no_answer(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "order.duckdb")
    load_late_and_shuffled(store, _rows(3), 3, late_before=T0 + timedelta(days=1), batch_rows=7)
    link_identity(store, "u002", "u001")
    erase_user(store, PROJECT, "u005")
    store.execute("CREATE TABLE before AS SELECT * FROM events")
    days = [(T0 + timedelta(days=d)).date() for d in range(DAYS)]
    assert not any(_physically_ordered(store, day) for day in days)  # shuffled writes
    answers = _answers(store)

    ordered = store.order_event_days(max_days=100)

    assert ordered.days == DAYS and not ordered.more_left
    for a, b in (("events", "before"), ("before", "events")):
        assert store.query(f"SELECT count(*) FROM (FROM {a} EXCEPT ALL FROM {b})") == [(0,)]
    assert all(_physically_ordered(store, day) for day in days)
    assert _answers(store) == answers
    assert store.order_event_days(max_days=100).days == 0  # nothing grew since
    store.close()


def test_a_day_is_ordered_once_finished_and_again_when_late_rows_grow_it_by_a_tenth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_order, "REORDER_MIN_ROWS", 3)
    today = T0 + timedelta(days=3)
    monkeypatch.setattr(rollups, "_today", lambda: today.date())
    store = DuckDBStore(tmp_path / "due.duckdb")

    def write(day: int, n: int, first: int = 0) -> None:
        rows = [
            event(f"u{(first + i) * 7 % 11}", T0 + timedelta(days=day, minutes=first + i))
            for i in range(n)
        ]
        store.append_events(to_table(rows))

    for day in range(4):  # days 0 .. 3: today is day 3, so days 0 and 1 are finished
        write(day, 40)
    assert event_order.due_days(store._cursor()) == [
        (T0 + timedelta(days=1)).date(),
        T0.date(),
    ]  # newest first
    assert store.order_event_days(max_days=1).more_left
    assert store.order_event_days(max_days=5).days == 1
    assert _physically_ordered(store, T0.date())
    assert not _physically_ordered(store, (T0 + timedelta(days=2)).date())  # yesterday
    assert store.order_event_days().days == 0
    write(0, 3, first=100)  # late rows: 3 more on 40 (< a tenth)
    assert store.order_event_days().days == 0
    assert not _physically_ordered(store, T0.date())
    write(0, 1, first=200)  # 4 more: a tenth
    assert store.order_event_days().days == 1
    assert _physically_ordered(store, T0.date())
    assert store.query("SELECT row_count FROM event_day_order WHERE day = ?", [T0.date()]) == [
        (44,)
    ]
    store.close()
    write_later = DuckDBStore(tmp_path / "due.duckdb", read_only=True)
    assert write_later.order_event_days().days == 0  # a read-only store never writes
    write_later.close()


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_the_loader_orders_the_finished_days_it_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: bool
) -> None:
    """A real ingest service writes through the log; the store's own loader rewrites the
    finished days (here one look each time it may look) and every row is still there: once
    idle, or (``busy``: it is never idle for long enough) between rounds."""
    from avila.storage import loader as loader_module

    monkeypatch.setattr(loader_module, "COMPACT_EVERY_S", 0.0)
    # a day may be ordered while its rows still load (between rounds): ordered again as it grows
    monkeypatch.setattr(event_order, "REORDER_MIN_ROWS", 1)
    if busy:
        monkeypatch.setattr(loader_module, "IDLE_CUT_S", 3600.0)
    store = DuckDBStore(tmp_path / "loaded.duckdb")
    store.ingest_log_config = IngestLogConfig(tmp_path / "log")
    requests = 30
    days = [(T0 + timedelta(days=d)).date() for d in range(3)]

    async def send() -> None:
        service = IngestService(store)
        await service.start()
        for r in range(requests):
            body = {
                "event_id": f"e{r}",
                "user_id": f"u{(r * 7) % 5}",
                "timestamp": (T0 + timedelta(hours=r * 2)).isoformat() + "Z",
                "event_type": {"type": "PageView", "data": {"url": f"/p{r % 2}"}},
            }
            assert (await service.ingest([json.dumps(body).encode()], PROJECT)).accepted == 1
        await asyncio.to_thread(store.read_barrier)

        def all_ordered() -> bool:
            return all(_physically_ordered(store, day) for day in days)

        deadline = time.monotonic() + 30
        extra = 0
        while not await asyncio.to_thread(all_ordered) and time.monotonic() < deadline:
            if busy:  # a round now and then: the loader orders a day between rounds
                body = {
                    "event_id": f"x{extra}",
                    "user_id": "later",
                    "event_type": {"type": "PageView", "data": {"url": "/"}},
                }
                result = await service.ingest([json.dumps(body).encode()], PROJECT)
                assert result.accepted == 1
                await asyncio.to_thread(store.read_barrier)
                extra += 1
            await asyncio.sleep(0.2)  # idle: the loader orders a day per idle tick
        await service.close()

    try:
        asyncio.run(send())
        assert all(_physically_ordered(store, day) for day in days)
        assert store.query(
            "SELECT count(*), count(DISTINCT event_id) FROM events WHERE user_id <> 'later'"
        ) == [(requests, requests)]
    finally:
        store.close()
