"""The materialised person map (DuckDB migration 8, ``avila.storage.person_map``) against an
independent resolution in plain Python, through every write path that adds or removes links.

Oracle (written from the rules in ``avila.identity``, not from the SQL): an id's link is its
earliest one by (ts, received_at, user_id), self-links ignored; an id resolves by following
links at most MAX_CHAIN (8) times, stopping where an id has no link; ids without links are not
in the map. In a cycle of at most MAX_CHAIN links the latest link (same key) is not followed
(avila.identity; tests/analytics/test_identity_cycles.py covers cycles through every path).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from analytics_data import PROJECT, T0, event, store_before_migration, to_table

from avila.analytics import erase_user, funnel, overview
from avila.analytics.common import events_source
from avila.identity import IDENTITY_SCHEMA
from avila.storage import open_store
from avila.storage.base import Store
from avila.storage.duckdb.migrations import MIGRATIONS

Link = tuple[str, str, str, datetime, datetime]  # project, anonymous_id, user_id, ts, received


def oracle(links: list[Link], project: str = PROJECT) -> dict[str, str]:
    first: dict[str, tuple[datetime, datetime, str]] = {}
    for p, anon, user, ts, received in links:
        if p != project or anon == user:
            continue
        if anon not in first or (ts, received, user) < first[anon]:
            first[anon] = (ts, received, user)
    link = {anon: key[2] for anon, key in first.items()}
    closing = set()  # ids whose link is the latest of a cycle of at most 8 links
    for start in link:
        ring, hop = [start], link[start]
        while hop != start and hop in link and len(ring) < 8:
            ring.append(hop)
            hop = link[hop]
        if hop == start and max(ring, key=first.__getitem__) == start:
            closing.add(start)
    link = {anon: user for anon, user in link.items() if anon not in closing}
    resolved = {}
    for anon, target in link.items():
        for _ in range(7):
            if target not in link:
                break
            target = link[target]
        resolved[anon] = target
    return resolved


def as_table(links: list[Link]) -> pa.Table:
    return pa.table(
        {
            "project_id": [x[0] for x in links],
            "anonymous_id": [x[1] for x in links],
            "user_id": [x[2] for x in links],
            "ts": pa.array([x[3] for x in links], pa.timestamp("us")),
            "received_at": pa.array([x[4] for x in links], pa.timestamp("us")),
            "source": ["test"] * len(links),
            "event_id": [f"l{i}-{x[1]}" for i, x in enumerate(links)],
        },
        schema=IDENTITY_SCHEMA,
    )


def stored_map(store: Store, project: str = PROJECT) -> dict[str, str]:
    rows = store.query(
        "SELECT anonymous_id, user_id FROM person_map WHERE project_id = ?", [project]
    )
    assert len(rows) == len({r[0] for r in rows}), "one row per id"
    return dict(rows)


def map_is_current(store: Store, project: str = PROJECT) -> bool:
    return events_source(store, project) == "events_resolved"


def assert_exact(store: Store, links: list[Link], project: str = PROJECT) -> None:
    want = oracle(links, project)
    assert stored_map(store, project) == want
    view = store.query(
        "SELECT anonymous_id, user_id FROM identity_resolved WHERE project_id = ?", [project]
    )
    assert dict(view) == want  # the recursive view agrees with the oracle too
    if want:
        assert map_is_current(store, project)


@pytest.fixture
def duck(tmp_path: Path) -> Store:
    store = open_store("duckdb:///" + str(tmp_path / "pm.duckdb"))
    yield store
    store.close()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_chains_merges_and_late_links(duck: Store) -> None:
    links: list[Link] = []

    def add(*batch: Link) -> None:
        links.extend(batch)
        duck.append_table("identities", as_table(list(batch)))
        assert_exact(duck, links)

    add((PROJECT, "a1", "alice", at(1), at(1)))
    add((PROJECT, "a0", "a1", at(2), at(2)))  # chain a0 -> a1 -> alice
    add((PROJECT, "b1", "bob", at(1), at(1)), (PROJECT, "b0", "b1", at(1), at(1)))
    assert stored_map(duck)["a0"] == "alice" and stored_map(duck)["b0"] == "bob"
    # a merge: alice turns out to be bob; everyone upstream of alice moves with her
    add((PROJECT, "alice", "bob", at(5), at(5)))
    assert {stored_map(duck)[x] for x in ("a0", "a1", "alice", "b0")} == {"bob"}
    # a late link: a1 was identified as carol *earlier* (ts) but arrives now; it wins over
    # a1 -> alice, and a0 (upstream) follows it
    add((PROJECT, "a1", "carol", at(0), at(10)))
    assert stored_map(duck)["a1"] == "carol" and stored_map(duck)["a0"] == "carol"
    # a later link of an already linked id changes nothing (the first link wins)
    add((PROJECT, "b1", "dave", at(30), at(30)))
    assert stored_map(duck)["b1"] == "bob"
    # same ts: received_at, then user_id decide
    add((PROJECT, "t", "zed", at(3), at(4)), (PROJECT, "t", "amy", at(3), at(4)))
    assert stored_map(duck)["t"] == "amy"
    # a cycle, and a self-link (ignored)
    add((PROJECT, "c1", "c2", at(1), at(1)), (PROJECT, "c2", "c1", at(2), at(2)))
    add((PROJECT, "s", "s", at(1), at(1)))
    assert "s" not in stored_map(duck)
    # other projects keep their own map
    add(("other", "a1", "zoe", at(1), at(1)))
    assert_exact(duck, links, "other")
    assert stored_map(duck)["a1"] == "carol"


def test_a_chain_longer_than_the_hop_limit(duck: Store) -> None:
    chain = [(PROJECT, f"n{i}", f"n{i + 1}", at(i), at(i)) for i in range(12)]
    random.Random(3).shuffle(chain)
    links: list[Link] = []
    for one in chain:  # one link per write, in random order: the far end moves each time
        links.append(one)
        duck.append_table("identities", as_table([one]))
        assert_exact(duck, links)
    assert stored_map(duck)["n0"] == "n8"  # 8 hops


def test_a_link_seven_hops_downstream_moves_the_start_of_the_chain(duck: Store) -> None:
    # n0 -> ... -> n7 resolves n0 to n7; then n7 -> n8 arrives: n0 (7 hops upstream of the
    # changed id) must move to n8, n0's 8th hop
    chain = [(PROJECT, f"n{i}", f"n{i + 1}", at(i), at(i)) for i in range(7)]
    duck.append_table("identities", as_table(chain))
    assert stored_map(duck)["n0"] == "n7"
    last = [(PROJECT, "n7", "n8", at(9), at(9)), (PROJECT, "n8", "n9", at(9), at(9))]
    duck.append_table("identities", as_table(last[:1]))
    assert_exact(duck, chain + last[:1])
    assert stored_map(duck)["n0"] == "n8"
    duck.append_table("identities", as_table(last[1:]))  # the 9th hop is beyond the limit
    assert_exact(duck, chain + last)
    assert stored_map(duck)["n0"] == "n8" and stored_map(duck)["n1"] == "n9"


@pytest.mark.parametrize("seed", range(4))
def test_random_link_batches_match_the_oracle(duck: Store, seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"id{i}" for i in range(40)] + ["ünï", ""]
    links: list[Link] = []
    for _ in range(12):
        batch = [
            (
                rng.choice([PROJECT, PROJECT, "other"]),
                rng.choice(ids),
                rng.choice(ids),
                at(rng.randrange(20)),  # ties on ts are common
                at(rng.randrange(3)),
            )
            for _ in range(rng.randrange(1, 8))
        ]
        links += batch
        duck.append_table("identities", as_table(batch))
        assert_exact(duck, links)
        assert_exact(duck, links, "other")


def test_loader_rounds_keep_the_map(duck: Store) -> None:
    links = [(PROJECT, "anon", "alice", at(1), at(1)), (PROJECT, "anon2", "anon", at(2), at(2))]
    duck.commit_log_batch(10, tables=[("identities", as_table(links[:1]))])
    duck.commit_log_batch(20, tables=[("identities", as_table(links[1:]))])
    assert_exact(duck, links)
    # a round already committed is skipped: neither links nor map change
    duck.commit_log_batch(20, tables=[("identities", as_table(links[1:]))])
    assert_exact(duck, links)
    assert duck.query("SELECT count(*) FROM identities") == [(2,)]


def test_a_link_written_behind_the_maps_back_is_read_exactly_and_repaired(duck: Store) -> None:
    duck.append_events(to_table([event("anon", at(1)), event("alice", at(2)), event("x", at(3))]))
    links = [(PROJECT, "anon", "alice", at(1), at(1))]
    duck.append_table("identities", as_table(links))
    assert map_is_current(duck)
    # a direct INSERT bypasses the map: reads notice and resolve through the recursive view
    duck.execute(
        "INSERT INTO identities VALUES (?, 'x', 'alice', ?, ?, 'sql', 'e-x')",
        [PROJECT, at(0), at(0)],
    )
    links.append((PROJECT, "x", "alice", at(0), at(0)))
    assert events_source(duck, PROJECT) == "events_resolved_live"
    span = {"start_time": at(0).isoformat(), "end_time": at(10).isoformat()}
    assert overview(duck, PROJECT, span)["unique_users"] == 1
    # the next maintained write rebuilds the project's map
    more = [(PROJECT, "y", "bob", at(4), at(4))]
    duck.append_table("identities", as_table(more))
    assert_exact(duck, links + more)
    assert overview(duck, PROJECT, span)["unique_users"] == 1


def test_erase_recomputes_the_map_and_forgets_the_person(duck: Store) -> None:
    links = [
        (PROJECT, "a0", "a1", at(1), at(1)),
        (PROJECT, "a1", "alice", at(1), at(1)),
        (PROJECT, "dev", "alice", at(1), at(1)),  # a shared device: first identified as alice
        (PROJECT, "dev", "bob", at(2), at(2)),
        (PROJECT, "b0", "dev", at(3), at(3)),  # b0 -> dev -> alice
        (PROJECT, "c0", "carol", at(1), at(1)),
    ]
    duck.append_table("identities", as_table(links))
    duck.append_events(to_table([event(x, at(i)) for i, x in enumerate(["a0", "b0", "c0", "bob"])]))
    assert stored_map(duck)["b0"] == "alice"
    erase_user(duck, PROJECT, "alice")
    erased = {"alice", "a0", "a1", "dev", "b0"}  # alice's ids (everything resolving to her)
    kept = [x for x in links if x[1] not in erased and x[2] not in erased]
    assert_exact(duck, kept)
    named = duck.query(
        "SELECT count(*) FROM person_map WHERE anonymous_id IN ('alice', 'a0', 'a1', 'dev', 'b0')"
        " OR user_id IN ('alice', 'a0', 'a1', 'dev', 'b0')"
    )
    assert named == [(0,)]
    assert stored_map(duck) == {"c0": "carol"}


def test_an_erase_failing_at_its_last_statement_changes_nothing(duck: Store, monkeypatch) -> None:
    """The person map is recomputed inside the erase's transaction: an error there (or a crash)
    leaves the events, the links and the map as they were, and the map current; the erase
    retried then succeeds and leaves the map current without a rebuild of its own."""
    from avila.storage import person_map

    links = [
        (PROJECT, "a0", "alice", at(1), at(1)),
        (PROJECT, "dev", "alice", at(1), at(1)),
        (PROJECT, "c0", "carol", at(1), at(1)),
    ]
    duck.append_table("identities", as_table(links))
    duck.append_events(to_table([event(x, at(i)) for i, x in enumerate(["a0", "dev", "c0"])]))

    def state() -> tuple[object, ...]:
        return (
            stored_map(duck),
            duck.query("SELECT count(*) FROM events"),
            duck.query("SELECT count(*) FROM identities"),
            duck.query("SELECT * FROM person_map_state ORDER BY ALL"),
            map_is_current(duck),
        )

    before = state()
    assert before[-1] is True
    original = person_map.rebuild_statements
    monkeypatch.setattr(
        person_map,
        "rebuild_statements",
        lambda project: [*original(project), ("SELECT error('injected at the end')", [])],
    )
    with pytest.raises(Exception, match="injected at the end"):
        erase_user(duck, PROJECT, "alice")
    assert state() == before
    monkeypatch.setattr(person_map, "rebuild_statements", original)
    assert erase_user(duck, PROJECT, "alice") == {"deleted_events": 2}
    assert_exact(duck, [links[2]])
    assert map_is_current(duck)


def test_migration_8_backfills_a_store_that_already_has_links(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    conn = store_before_migration(path, 8)
    rng = random.Random(8)
    ids = [f"u{i}" for i in range(30)]
    links = [
        (
            rng.choice([PROJECT, "other"]),
            rng.choice(ids),
            rng.choice(ids),
            at(rng.randrange(9)),
            at(0),
        )
        for _ in range(60)
    ]
    conn.register("old_links", as_table(links))
    conn.execute("INSERT INTO identities SELECT * FROM old_links")
    conn.execute(
        "INSERT INTO events (project_id, event_id, user_id, ts, received_at, event_type)"
        " SELECT project_id, 'e' || i, 'u' || (i % 30), ?, ?, 'page_view'"
        " FROM (SELECT ? AS project_id), range(200) t(i)",
        [at(1), at(1), PROJECT],
    )
    conn.close()
    store = open_store("duckdb:///" + str(path))
    try:
        assert store.query("SELECT max(version) FROM schema_version") == [(MIGRATIONS[-1][0],)]
        assert_exact(store, links)
        assert_exact(store, links, "other")
        want = len({oracle(links).get(f"u{i}", f"u{i}") for i in range(30)})
        span = {"start_time": at(0).isoformat(), "end_time": at(10).isoformat()}
        assert overview(store, PROJECT, span)["unique_users"] == want
    finally:
        store.close()


def test_the_mapped_view_equals_the_recursive_view_row_for_row(duck: Store) -> None:
    rng = random.Random(5)
    users = [f"u{i}" for i in range(60)]
    rows = [
        event(rng.choice(users), at(rng.randrange(600)), rng.choice(["page_view", "purchase"]))
        for _ in range(800)
    ]
    duck.append_events(to_table(rows))
    links = [
        (PROJECT, rng.choice(users), rng.choice(users), at(rng.randrange(50)), at(0))
        for _ in range(40)
    ]
    for lo in range(0, 40, 7):
        duck.append_table("identities", as_table(links[lo : lo + 7]))
    assert map_is_current(duck)
    mapped = duck.query("SELECT event_id, user_id FROM events_resolved ORDER BY event_id")
    live = duck.query("SELECT event_id, user_id FROM events_resolved_live ORDER BY event_id")
    assert mapped == live
    resolved = oracle(links)
    want = sorted((r["event_id"], resolved.get(r["user_id"], r["user_id"])) for r in rows)
    assert sorted(mapped) == want
    # and the analytics answers: unique users and a funnel's first step are persons
    span = {"start_time": at(0).isoformat(), "end_time": at(601).isoformat()}
    persons = {resolved.get(r["user_id"], r["user_id"]) for r in rows}
    assert overview(duck, PROJECT, span)["unique_users"] == len(persons)
    steps = [
        {"condition_type": "page_view", "condition_value": "/"},
        {"condition_type": "purchase"},
    ]
    got = funnel(duck, PROJECT, {"steps": steps, **span})
    first = {
        resolved.get(r["user_id"], r["user_id"]) for r in rows if r["event_type"] == "page_view"
    }
    assert got["steps"][0]["count"] == len(first)


def test_avila_import_keeps_the_map(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from avila.export.bulk import bulk_import
    from avila.storage.duckdb.store import DuckDBStore

    rows = [  # (user_id, event name, metadata): anon-1 -> alice, then anon-0 -> anon-1
        ("alice", "$identify", '{"anonymous_id":"anon-1"}'),
        ("anon-1", "$alias", '{"previous_id":"anon-0"}'),
        ("anon-0", "plan", "{}"),
    ]
    source = tmp_path / "links.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": [f"i{i}" for i in range(len(rows))],
                "user_id": [r[0] for r in rows],
                "timestamp": [(T0 + timedelta(minutes=i)).isoformat() + "Z" for i in range(3)],
                "event_type": ["custom"] * len(rows),
                "data": [f'{{"name":"{r[1]}"}}' for r in rows],
                "metadata": [r[2] for r in rows],
            }
        ),
        source,
    )
    store = DuckDBStore(tmp_path / "import.duckdb")
    try:
        summary = bulk_import(source, "parquet", store, PROJECT)
        assert summary.accepted == 3, summary
        assert map_is_current(store)
        assert stored_map(store) == {"anon-1": "alice", "anon-0": "alice"}
    finally:
        store.close()


def test_append_table_takes_link_columns_by_name(duck: Store) -> None:
    links = [(PROJECT, "anon", "alice", at(1), at(1))]
    table = as_table(links).select(["user_id", "received_at", "ts", "anonymous_id", "project_id"])
    duck.append_table("identities", table)  # another column order, no source / event_id
    assert_exact(duck, links)
    assert duck.query("SELECT anonymous_id, user_id, source FROM identities") == [
        ("anon", "alice", None)
    ]
    with pytest.raises(ValueError, match="no columns"):
        duck.append_table("identities", table.append_column("nope", pa.array([1])))
