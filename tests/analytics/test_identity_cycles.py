"""Identity link cycles (``a -> b`` and later ``b -> a``; ``a -> b -> c -> a``) resolve to one
person, the same on the DuckDB person map, DuckDB's recursive ``identity_resolved`` view (behind
``events_resolved_live``) and ClickHouse's recursive view.

Before the rule, a cycle was walked round and round until the hop limit, so its ids resolved
by the parity of MAX_CHAIN: a 2-cycle gave two persons (each id itself or the other), and a GDPR
erase of the person left part of their history behind.

Oracle (the rule of ``avila.identity``, written here in plain Python, not from the SQL):

1. an id's link is its earliest one by (ts, received_at, user_id); self-links are ignored;
2. where links form a cycle of at most MAX_CHAIN links, the cycle's latest link by the same key
   is not followed (the ids were already one person when it was made); its id is the person;
3. an id resolves by following the remaining links at most MAX_CHAIN times; ids without a
   followed link are not in the map (they are their own person).

Links are written the way the product writes them: ``$identify``/``$alias`` custom events,
their links taken by the loader's own extraction (``round_reading.identity_links``) and stored
with the events in one ``commit_log_batch`` round, or posted to a real server.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from analytics_data import PROJECT, T0, event, store_before_migration, to_table
from tests.conftest import TEST_KEY

from avila.analytics import erase_user, overview
from avila.analytics.common import events_source
from avila.identity import MAX_CHAIN
from avila.storage import open_store
from avila.storage.base import Store
from avila.storage.round_reading import identity_links
from avila.testing.backends import BACKENDS, open_backend

#: (anonymous_id, user_id, ts, received_at) of one stored link of PROJECT.
Link = tuple[str, str, datetime, datetime]


def oracle(links: list[Link]) -> dict[str, str]:
    first: dict[str, tuple[datetime, datetime, str]] = {}
    for anon, user, ts, received in links:
        if anon == user:
            continue
        key = (ts, received, user)
        if anon not in first or key < first[anon]:
            first[anon] = key
    link = {anon: key[2] for anon, key in first.items()}
    closing = set()
    for start in link:
        ring, hop = [start], link[start]  # hop: where len(ring) links from start lead
        while hop != start and hop in link and len(ring) < MAX_CHAIN:
            ring.append(hop)
            hop = link[hop]
        if hop == start and max(ring, key=first.__getitem__) == start:
            closing.add(start)  # the latest link of a cycle of at most MAX_CHAIN links
    kept = {anon: user for anon, user in link.items() if anon not in closing}
    resolved = {}
    for anon, target in kept.items():
        for _ in range(MAX_CHAIN - 1):
            if target not in kept:
                break
            target = kept[target]
        resolved[anon] = target
    return resolved


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class Writer:
    """Writes rounds of events the way the loader does: one ``commit_log_batch`` per round,
    the links carried by the round's ``$identify``/``$alias`` events extracted by the loader's
    own function, in the same transaction as the events."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.links: list[Link] = []
        self.rows: list[dict[str, Any]] = []
        self.position = store.log_position()  # a reused chdb database keeps its position
        self.first = self.position

    def round(self, *links: tuple[str, str, float]) -> None:
        """One round: for each (anonymous_id, user_id, minute), a page view of the anonymous
        id and the event that links it (``$identify`` and ``$alias`` in turn)."""
        self.position += 1
        received = at(10_000 + self.position - self.first)  # rounds arrive in order, after every ts
        rows = []
        for i, (anon, user, minute) in enumerate(links):
            name, key = ("$identify", "anonymous_id") if i % 2 == 0 else ("$alias", "previous_id")
            rows.append(event(anon, at(minute) - timedelta(seconds=1), received_at=received))
            rows.append(
                event(
                    user,
                    at(minute),
                    "custom",
                    event_name=name,
                    metadata=json.dumps({key: anon}),
                    received_at=received,
                )
            )
            self.links.append((anon, user, at(minute), received))
        table = to_table(rows)
        columns = table.to_pydict()
        for name in ("ts", "received_at"):  # the loader's columns: epoch microseconds
            columns[name] = [
                (x - datetime(1970, 1, 1)) // timedelta(microseconds=1) for x in columns[name]
            ]
        found = identity_links(columns)  # self-links are not links
        assert (found.num_rows if found else 0) == sum(anon != user for anon, user, _ in links)
        tables = [("identities", found)] if found else []
        self.store.commit_log_batch(self.position, events=table, tables=tables)
        self.rows += rows
        check(self.store, self.links, self.rows)


def check(store: Store, links: list[Link], rows: list[dict[str, Any]]) -> None:
    want = oracle(links)
    view = store.query(
        "SELECT anonymous_id, user_id FROM identity_resolved WHERE project_id = ?", [PROJECT]
    )
    assert dict(view) == want, "the recursive view"
    assert len(view) == len(want)
    expected = sorted((r["event_id"], want.get(r["user_id"], r["user_id"])) for r in rows)
    got = store.query(
        "SELECT event_id, user_id FROM events_resolved WHERE project_id = ? ORDER BY event_id",
        [PROJECT],
    )
    assert sorted(got) == expected
    if store.backend == "duckdb":
        mapped = store.query(
            "SELECT anonymous_id, user_id FROM person_map WHERE project_id = ?", [PROJECT]
        )
        assert dict(mapped) == want and len(mapped) == len(want), "the person map"
        if any(anon != user for anon, user, _, _ in links):  # the map is current
            assert events_source(store, PROJECT) == "events_resolved"
        live = store.query(
            "SELECT event_id, user_id FROM events_resolved_live WHERE project_id = ?"
            " ORDER BY event_id",
            [PROJECT],
        )
        assert sorted(live) == expected
    persons = {want.get(r["user_id"], r["user_id"]) for r in rows}
    span = {"start_time": at(-100).isoformat(), "end_time": at(10_000).isoformat()}
    assert overview(store, PROJECT, span)["unique_users"] == len(persons)


@pytest.fixture(params=BACKENDS)
def writer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Writer]:
    store = open_backend(request.param, tmp_path)
    yield Writer(store)
    store.close()


def persons_of(writer: Writer, *ids: str) -> set[str]:
    resolved = dict(
        writer.store.query(
            "SELECT anonymous_id, user_id FROM identity_resolved WHERE project_id = ?", [PROJECT]
        )
    )
    return {resolved.get(x, x) for x in ids}


def test_a_two_cycle_is_one_person_under_the_earlier_links_user(writer: Writer) -> None:
    writer.round(("a", "b", 1))
    writer.round(("b", "a", 2))  # closes the cycle: not followed
    assert persons_of(writer, "a", "b") == {"b"}


def test_a_two_cycle_within_one_round(writer: Writer) -> None:
    writer.round(("b", "a", 2), ("a", "b", 1))
    assert persons_of(writer, "a", "b") == {"b"}


def test_a_three_cycle_is_one_person(writer: Writer) -> None:
    writer.round(("a", "b", 1))
    writer.round(("b", "c", 2))
    writer.round(("c", "a", 3))
    assert persons_of(writer, "a", "b", "c") == {"c"}
    # the latest link (by ts) decides, not the order of the ids or of the writes: q -> r
    writer.round(("q", "r", 2), ("p", "q", 1))
    writer.round(("r", "p", 0))
    assert persons_of(writer, "p", "q", "r") == {"q"}


def test_a_cycle_with_a_tail(writer: Writer) -> None:
    writer.round(("x", "a", 0))
    writer.round(("a", "b", 1))
    writer.round(("b", "a", 2))
    assert persons_of(writer, "x", "a", "b") == {"b"}
    # and a longer tail, written before the cycle closes: the whole chain follows the person
    writer.round(*[(f"y{i}", f"y{i + 1}", 1) for i in range(5)], ("y5", "x", 1))
    assert persons_of(writer, "y0", "y3", "x") == {"b"}


def test_a_cycle_whose_ids_have_later_links_elsewhere(writer: Writer) -> None:
    writer.round(("a", "b", 1))
    writer.round(("b", "a", 2))
    # later links of the cycle's ids move nobody: an id's link is its first one
    writer.round(("b", "c", 3), ("a", "d", 4))
    writer.round(("c", "e", 5), ("d", "b", 6))
    assert persons_of(writer, "a", "b") == {"b"}
    assert persons_of(writer, "c", "d") == {"e", "b"}
    # a late link with an *earlier* ts is b's first link: the cycle is gone, all go to f
    writer.round(("b", "f", 0))
    assert persons_of(writer, "a", "b", "d") == {"f"}
    # and a late link that closes a new cycle through the old one: f -> a (latest) is ignored
    writer.round(("f", "a", 7))
    assert persons_of(writer, "a", "b", "d", "f") == {"f"}


def test_a_write_fourteen_hops_downstream_moves_the_start_of_a_chain(writer: Writer) -> None:
    # y0 -> ... -> y7 = c0 (7 links), then the cycle c0 -> c1 -> ... -> c7 -> c0 (8 links)
    # whose latest link is c0 -> c1: y0 resolves to c0 (the person). A late, earlier link of
    # c7, 14 hops from y0, dissolves the cycle: c0 -> c1 is followed again and y0 moves to c1
    # (its 8th hop); the write must reach y0 although its walk ends 7 hops from c7.
    ring = ["y0", "y1", "y2", "y3", "y4", "y5", "y6"] + [f"c{i}" for i in range(8)]
    chain = [(ring[i], ring[i + 1], 2) for i in range(len(ring) - 1)]
    chain[7] = ("c0", "c1", 5)  # the latest link of the cycle
    writer.round(*chain, ("c7", "w", 3))  # c7 -> c0 not yet: no cycle, y0 -> c1 (8th hop)
    assert persons_of(writer, "y0") == {"c1"}
    writer.round(("c7", "c0", 2))  # a late, earlier link closes the cycle: y0 -> c0
    assert persons_of(writer, "y0", "c3", "c7") == {"c0"}
    writer.round(("c7", "v", 1))  # an earlier one still dissolves it again
    assert persons_of(writer, "y0") == {"c1"}


def test_cycles_up_to_the_hop_limit_are_broken_longer_ones_follow_it(writer: Writer) -> None:
    eight = [(f"e{i}", f"e{(i + 1) % 8}", i) for i in range(8)]
    writer.round(*eight)
    assert persons_of(writer, *[f"e{i}" for i in range(8)]) == {"e7"}
    # a cycle of 9 links is not seen as one: each id goes 8 hops on, like a long chain
    nine = [(f"n{i}", f"n{(i + 1) % 9}", i) for i in range(9)]
    writer.round(*nine)
    assert persons_of(writer, "n0", "n1") == {"n8", "n0"}


@pytest.mark.parametrize("seed", range(3))
def test_random_rounds_with_many_cycles_match_the_oracle(writer: Writer, seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"id{i}" for i in range(14)]  # few ids: cycles of every length are common
    for _ in range(10):
        writer.round(
            *[
                (rng.choice(ids), rng.choice(ids), rng.randrange(12))  # ties on ts are common
                for _ in range(rng.randrange(1, 6))
            ]
        )


def test_erasing_a_person_whose_ids_form_a_cycle_leaves_nothing(writer: Writer) -> None:
    writer.round(("x", "a", 0))
    writer.round(("a", "b", 1))
    writer.round(("b", "a", 2))
    writer.round(("c0", "carol", 1))
    store = writer.store
    mine = {"x", "a", "b"}
    theirs = [r for r in writer.rows if r["user_id"] in mine]
    assert erase_user(store, PROJECT, "b") == {"deleted_events": len(theirs)}
    named = store.query(
        "SELECT count(*) FROM events WHERE project_id = ? AND user_id IN ('x', 'a', 'b')",
        [PROJECT],
    )
    assert named == [(0,)]
    left = store.query(
        "SELECT count(*) FROM identities WHERE anonymous_id IN ('x', 'a', 'b')"
        " OR user_id IN ('x', 'a', 'b')"
    )
    assert left == [(0,)]
    kept_links = [x for x in writer.links if x[0] not in mine and x[1] not in mine]
    kept_rows = [r for r in writer.rows if r["user_id"] not in mine]
    check(store, kept_links, kept_rows)
    assert oracle(kept_links) == {"c0": "carol"}


def test_erasing_a_member_that_is_not_the_person_leaves_a_consistent_resolution(
    writer: Writer,
) -> None:
    # erase_user takes the id and every id resolving to it (docs/users.md); nothing resolves to
    # a (a -> b), so a's events and every link naming a go, and the map is recomputed
    writer.round(("x", "a", 0))
    writer.round(("a", "b", 1))
    writer.round(("b", "a", 2))
    theirs = [r for r in writer.rows if r["user_id"] == "a"]
    assert erase_user(writer.store, PROJECT, "a") == {"deleted_events": len(theirs)}
    kept_links = [x for x in writer.links if "a" not in x[:2]]
    check(writer.store, kept_links, [r for r in writer.rows if r["user_id"] != "a"])


def test_a_store_from_before_the_rule_gets_the_new_view_and_map(tmp_path: Path) -> None:
    from avila.storage.duckdb.migrations import MIGRATIONS

    version = next(v for v, description, _ in MIGRATIONS if "cycle" in description)
    path = tmp_path / "old.duckdb"
    conn = store_before_migration(path, version)
    links = [
        ("x", "a", at(0), at(5)),
        ("a", "b", at(1), at(5)),
        ("b", "a", at(2), at(5)),
        ("p", "q", at(1), at(5)),
        ("q", "r", at(2), at(5)),
        ("r", "p", at(3), at(5)),
    ]
    conn.register(
        "old_links",
        pa.table(
            {
                "project_id": [PROJECT] * len(links),
                "anonymous_id": [x[0] for x in links],
                "user_id": [x[1] for x in links],
                "ts": pa.array([x[2] for x in links], pa.timestamp("us")),
                "received_at": pa.array([x[3] for x in links], pa.timestamp("us")),
            }
        ),
    )
    conn.execute(
        "INSERT INTO identities (project_id, anonymous_id, user_id, ts, received_at)"
        " SELECT * FROM old_links"
    )
    rows = [event(x, at(1)) for x in ("x", "a", "b", "p", "q", "r")]
    conn.register("old_events", to_table(rows))
    conn.execute("INSERT INTO events SELECT * FROM old_events")
    # the old version kept its map with the old (parity) resolution, and current
    conn.execute(
        "INSERT INTO person_map SELECT project_id, anonymous_id, user_id FROM identity_resolved"
    )
    conn.execute(
        "INSERT INTO person_map_state SELECT ?, (SELECT count(*) FROM identities),"
        " (SELECT count(*) FROM person_map)",
        [PROJECT],
    )
    conn.close()
    store = open_store("duckdb:///" + str(path))
    try:
        assert store.query("SELECT max(version) FROM schema_version") == [(MIGRATIONS[-1][0],)]
        check(store, links, rows)
        assert oracle(links) == {"x": "b", "a": "b", "p": "r", "q": "r"}
    finally:
        store.close()


def test_a_clickhouse_store_from_before_the_rule_gets_the_new_view(tmp_path: Path) -> None:
    if "chdb" not in BACKENDS:
        pytest.skip("no chdb")
    from avila.storage.clickhouse import migrations as ch

    store = open_backend("chdb", tmp_path)
    try:
        version = next(v for v, description, _ in ch.MIGRATIONS if "cycle" in description)
        # as an older version left it: the first identity views, the version not recorded
        for view in ch.IDENTITY_VIEWS:
            store.execute(
                view.replace("CREATE VIEW IF NOT EXISTS", "CREATE OR REPLACE VIEW").format(
                    db="", on_cluster=""
                )
            )
        store.execute("DELETE FROM schema_version WHERE version = ?", [version])
        writer = Writer(store)
        with pytest.raises(AssertionError, match="the recursive view"):
            writer.round(("a", "b", 1), ("b", "a", 2))  # stored, then resolved the old way
    finally:
        ch.migrate(store.execute, store._query_rows, ch.DDLOptions())
    try:
        assert store.query("SELECT count(*) FROM schema_version WHERE version = ?", [version]) == [
            (1,)
        ]
        check(store, writer.links, writer.rows)
    finally:
        store.close()


def test_a_two_cycle_posted_to_a_real_server_is_one_person_until_erased(
    make_server: Any,
) -> None:
    from avila.storage.duckdb.store import DuckDBStore

    server = make_server()
    headers = {"x-api-key": TEST_KEY}

    def send(
        user: str, minute: int, kind: str = "PageView", data: Any = None, **extra: Any
    ) -> None:
        body = {
            "event_id": f"{user}-{minute}-{kind}",
            "user_id": user,
            "timestamp": at(minute).isoformat() + "Z",
            "event_type": {"type": kind, "data": data if data is not None else {"url": "/"}},
            **extra,
        }
        response = httpx.post(
            server.url + "/api/v1/events/batch",
            json={"events": [body]},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 202, response.text

    def identify(user: str, anon: str, minute: int) -> None:
        send(
            user,
            minute,
            "Custom",
            {"name": "$identify", "properties": {}},
            metadata={"anonymous_id": anon},
        )

    def alias(user: str, previous: str, minute: int) -> None:
        send(
            user,
            minute,
            "Custom",
            {"name": "$alias", "properties": {}},
            metadata={"previous_id": previous},
        )

    for user, minute in (("x", 0), ("a", 1), ("b", 2), ("carol", 3)):
        send(user, minute)
    identify("a", "x", 4)  # x -> a
    identify("b", "a", 5)  # a -> b
    alias("a", "b", 6)  # b -> a: closes the cycle
    span = {"start_time": at(-1).isoformat() + "Z", "end_time": at(60).isoformat() + "Z"}
    got = httpx.get(
        server.url + "/api/v1/analytics/overview", params=span, headers=headers, timeout=30
    )
    assert got.status_code == 200, got.text
    assert got.json()["unique_users"] == 2  # the person b, and carol
    profile = httpx.get(server.url + "/api/v1/users/b", headers=headers, timeout=30).json()
    assert profile["total_events"] == 6  # x, a and b's page views and the three links
    erased = httpx.delete(server.url + "/api/v1/users/b", headers=headers, timeout=30)
    assert erased.status_code == 200, erased.text
    assert erased.json() == {"deleted_events": 6}
    got = httpx.get(
        server.url + "/api/v1/analytics/overview", params=span, headers=headers, timeout=30
    )
    assert got.json()["unique_users"] == 1
    server.stop()
    store = DuckDBStore(server.data_dir / "avila.duckdb", read_only=True)
    try:
        assert store.query("SELECT user_id FROM events") == [("carol",)]
        assert store.query("SELECT count(*) FROM identities") == [(0,)]
        assert store.query("SELECT count(*) FROM person_map") == [(0,)]
    finally:
        store.close()
