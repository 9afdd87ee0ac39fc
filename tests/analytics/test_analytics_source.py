"""The one event source: real-time reads only recent row groups, and identity stitching counts a
person once in funnels, profiles and sessions, and erases their anonymous history too."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import msgspec
import pyarrow as pa
from analytics_data import PROJECT, T0, event, link_identity, to_table

from avila.analytics import erase_user, funnel, overview, realtime, sessions, user_profile
from avila.analytics.common import events_source, fragments, rows_at_most, where_clause
from avila.analytics.realtime import counts_sql
from avila.schemas.analytics import PropertyFilter
from avila.storage import open_store


def test_realtime_scans_only_recent_row_groups(tmp_path: Path) -> None:
    now = datetime(2024, 3, 1, 12)
    old, recent = 300_000, 10
    store = open_store("duckdb:///" + str(tmp_path / "rt.duckdb"))
    base = now - timedelta(days=2)
    # Bulk old rows in receive order, then a handful received in the last minutes.
    store.append_events(
        _widen(
            pa.table(
                {
                    "project_id": [PROJECT] * old,
                    "event_id": [f"o{i}" for i in range(old)],
                    "user_id": [f"u{i % 500}" for i in range(old)],
                    "ts": pa.array([base] * old, pa.timestamp("us")),
                    "received_at": pa.array(
                        [base + timedelta(milliseconds=i) for i in range(old)], pa.timestamp("us")
                    ),
                    "event_type": ["page_view"] * old,
                }
            )
        )
    )
    store.append_events(
        to_table(
            [
                event("r", now, received_at=now - timedelta(seconds=20 * i), url="/now")
                for i in range(recent)
            ]
        )
    )
    link_identity(store, "someone-anonymous", "someone")  # the project reads the resolving view
    # Both days are finished: the loader would rewrite them in user order, at the table's end.
    # Their rows keep their receive times, so the old rows' new row groups are skipped alike.
    assert store.order_event_days(max_days=10).days == 2
    assert realtime(store, PROJECT, {"now": now.isoformat()})["events_last_5_minutes"] == recent
    source = counts_sql(store, PROJECT)
    assert "events_resolved" in source
    store.close()

    profile = tmp_path / "profile.json"
    con = duckdb.connect(str(tmp_path / "rt.duckdb"), read_only=True)
    con.execute("PRAGMA enable_profiling='json'")
    con.execute(f"PRAGMA profiling_output='{profile}'")
    m1, m5, m15 = (now - timedelta(minutes=m) for m in (1, 5, 15))
    rows = con.execute(source, [m1, m5, m1, m5, PROJECT, m15, now]).fetchall()
    con.close()
    assert rows[0][2] == recent
    stats = json.loads(profile.read_text())["query"]
    # Zone maps on received_at skip the old row groups: the scan reads about one row group
    # (122,880 rows at most), not the 300,000 rows of the table.
    assert stats["total_row_groups_scanned"] < stats["total_row_groups_to_scan"]
    assert stats["total_rows_scanned"] <= 130_000


def _widen(table: pa.Table) -> pa.Table:
    """``table`` with every other event column as nulls, in the stored schema's order."""
    full = to_table([]).schema
    return pa.table(
        [
            table.column(f.name) if f.name in table.column_names else pa.nulls(len(table), f.type)
            for f in full
        ],
        schema=full,
    )


def test_stitched_person_is_counted_once(load) -> None:
    m = timedelta(minutes=1)
    store = load(
        [
            event("anon-1", T0, url="/"),  # browsing before logging in
            event("anon-1", T0 + m, url="/product"),
            event("alice", T0 + 2 * m, "purchase", order_id="o1", revenue=10.0),
            event("bob", T0, url="/"),
            event("alice", T0, url="/", project_id="other"),
        ]
    )
    link_identity(store, "anon-1", "alice")
    steps = [
        {"condition_type": "page_view", "condition_value": "/"},
        {"condition_type": "page_view", "condition_value": "/product"},
        {"condition_type": "purchase"},
    ]
    span = {"start_time": "2024-02-01T00:00:00Z", "end_time": "2024-04-01T00:00:00Z"}
    got = funnel(store, PROJECT, {"steps": steps, **span})
    assert [s["count"] for s in got["steps"]] == [2, 1, 1]  # alice (as anon-1, then herself)
    profile = user_profile(store, PROJECT, "alice")
    assert profile["total_events"] == 3 and profile["sessions"] == 1
    assert sessions(store, PROJECT, span)["users"] == 2
    assert erase_user(store, PROJECT, "alice") == {"deleted_events": 3}
    assert store.query("SELECT count(*) FROM events WHERE user_id = 'anon-1'")[0][0] == 0
    # The identity link names both ids: it is personal data and goes with them.
    assert store.query("SELECT count(*) FROM identities WHERE project_id = ?", [PROJECT])[0][0] == 0
    assert user_profile(store, "other", "alice")["total_events"] == 1


def test_overview_counts_a_stitched_person_once_and_filters_by_the_resolved_id(load) -> None:
    # Overview reads the events table itself for counts by type/page/referrer unless a filter
    # names the user: then the filter must see the resolved id (anon-1 is alice).
    m = timedelta(minutes=1)
    store = load(
        [
            event("anon-1", T0, url="/"),
            event("anon-1", T0 + m, url="/product"),
            event("alice", T0 + 2 * m, "purchase", order_id="o1", revenue=10.0),
            event("bob", T0, url="/"),
            event("bob", T0 + m, url="/cart"),
        ]
    )
    link_identity(store, "anon-1", "alice")
    span = {"start_time": "2024-02-01T00:00:00Z", "end_time": "2024-04-01T00:00:00Z"}
    whole = overview(store, PROJECT, span)
    assert whole["total_events"] == 5 and whole["unique_users"] == 2
    assert {p["url"]: p["views"] for p in whole["top_pages"]} == {"/": 2, "/product": 1, "/cart": 1}
    alice = [{"property": "user_id", "operator": "eq", "value": "alice"}]
    only = overview(store, PROJECT, {**span, "filters": alice})
    assert only["total_events"] == 3 and only["unique_users"] == 1
    assert {p["url"]: p["views"] for p in only["top_pages"]} == {"/": 1, "/product": 1}
    assert only["events_by_type"] == {"page_view": 2, "purchase": 1}


def test_the_row_bound_of_a_stitched_project_counts_the_events_table(load) -> None:
    # Funnels size their slices by rows_at_most: the resolving view's rows, counted on the
    # table without its join. Equal under any filter but one on user_id, which is left out.
    m = timedelta(minutes=1)
    store = load(
        [
            event("anon-1", T0, url="/", browser="Firefox"),
            event("anon-1", T0 + m, url="/product", browser="Firefox"),
            event("alice", T0 + 2 * m, "purchase", order_id="o1", revenue=10.0),
            event("bob", T0, url="/", browser="Chrome"),
            event("bob", T0 + 40 * 24 * 60 * m, url="/late"),
            event("alice", T0, url="/", project_id="other"),
        ]
    )
    link_identity(store, "anon-1", "alice")
    start, end = datetime(2024, 2, 1), datetime(2024, 3, 20)
    source = events_source(store, PROJECT)
    assert source != fragments(store)["events_unstitched"]  # the project reads the join

    def through_the_join(filters: list[dict[str, str]]) -> int:
        parsed = [msgspec.convert(f, PropertyFilter) for f in filters]
        where = where_clause(store, PROJECT, start, end, parsed)
        return int(
            store.query(f"SELECT count(*) FROM {source} WHERE {where.sql}", where.params)[0][0]
        )

    def bound(filters: list[dict[str, str]]) -> int:
        return rows_at_most(
            store, PROJECT, start, end, [msgspec.convert(f, PropertyFilter) for f in filters]
        )

    firefox = [{"property": "browser", "operator": "eq", "value": "Firefox"}]
    alice = [{"property": "user_id", "operator": "eq", "value": "alice"}]
    assert bound([]) == through_the_join([]) == 4
    assert bound(firefox) == through_the_join(firefox) == 2
    assert through_the_join(alice) == 3  # anon-1's rows are alice's
    assert bound(alice) == 4 and bound([*alice, *firefox]) == 2
    steps = [
        {"condition_type": "page_view", "condition_value": "/"},
        {"condition_type": "purchase"},
    ]
    span = {"start_time": start.isoformat() + "Z", "end_time": end.isoformat() + "Z"}
    got = funnel(store, PROJECT, {"steps": steps, **span, "filters": alice})
    assert [s["count"] for s in got["steps"]] == [1, 1]
