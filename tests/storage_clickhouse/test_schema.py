"""The ClickHouse schema: single-node DDL run on chdb (engines, keys, partitions, TTL, recorded
migrations), and the cluster DDL (ReplicatedMergeTree + Distributed ON CLUSTER, sharded by user)
checked as text and parsed by ClickHouse's own parser. CI has no cluster to run it on."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import clickhouse_connect
import pytest

from avila.config import Settings
from avila.errors import ConfigError
from avila.storage.clickhouse.migrations import MIGRATIONS, TABLES, DDLOptions, all_statements
from avila.storage.clickhouse.store import ClickHouseStore
from avila.storage.clickhouse.target import ClickHouseOptions, parse_url
from avila.storage.duckdb.migrations import MIGRATIONS as DUCKDB_MIGRATIONS
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.schema import EVENT_COLUMN_NAMES, columns_to_arrow


def _open(path: Path, **options: object) -> ClickHouseStore:
    return ClickHouseStore(parse_url(f"chdb://{path}"), ClickHouseOptions(**options))  # type: ignore[arg-type]


def test_single_node_schema_on_chdb(tmp_path: Path) -> None:
    store = _open(tmp_path / "db")
    try:
        tables = {
            name: (engine, sorting, partition)
            for name, engine, sorting, partition in store.query(
                "SELECT name, engine, sorting_key, partition_key FROM system.tables"
                " WHERE database = currentDatabase()"
            )
        }
        assert tables["events"] == (
            "MergeTree",
            "project_id, toDate(ts), user_id, ts",
            "toYYYYMM(ts)",
        )
        assert tables["telemetry"][0] == "MergeTree" and tables["telemetry"][2] == "toYYYYMM(ts)"
        for mutable in ("devices", "twin_desired", "alarm_rules", "experiments", "alert_rules"):
            assert tables[mutable][0] == "ReplacingMergeTree", mutable
        assert {"identity_links", "identity_resolved", "events_resolved"} <= set(tables)
        types = dict(
            store.query(
                "SELECT name, type FROM system.columns WHERE database = currentDatabase()"
                " AND table = 'events'"
            )
        )
        assert types["project_id"] == types["event_type"] == "LowCardinality(String)"
        assert types["ts"] == "DateTime64(6, 'UTC')"
        assert (
            "TTL"
            not in store.query(
                "SELECT create_table_query FROM system.tables WHERE name = 'events'"
            )[0][0]
        )
        versions = [
            v for (v,) in store.query("SELECT version FROM schema_version ORDER BY version")
        ]
        assert versions == [v for v, _, _ in MIGRATIONS]
    finally:
        store.close()
    again = _open(tmp_path / "db")  # a second start applies nothing twice
    try:
        assert again.query("SELECT count() FROM schema_version") == [(len(MIGRATIONS),)]
    finally:
        again.close()


def test_every_duckdb_table_has_a_clickhouse_table(tmp_path: Path) -> None:
    duck = DuckDBStore(tmp_path / "s.duckdb")
    try:
        duck_tables = {
            name: [
                c
                for (c,) in duck.query(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
                    " ORDER BY ordinal_position",
                    [name],
                )
            ]
            for (name,) in duck.query(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
                " AND table_name <> 'schema_version'"
            )
        }
    finally:
        duck.close()
    # The daily rollups are DuckDB's own (kept in the events' transaction, which a MergeTree
    # does not offer); readers use them only where ``Store.has_rollups``; so is the record of
    # their compaction (rollup_compactions).
    # So is the person map (avila.storage.person_map, kept in the links' transaction; the
    # ClickHouse backend resolves through its recursive events_resolved view).
    # So are the kept sessions (avila.storage.session_table: a chain is recomputed in the
    # events' transaction, or its events wait in kept_pending for a cut in bulk), and the kept
    # purchases (avila.storage.purchase_table, written in the events' transaction). The record
    # of the days of events put in user order (avila.storage.event_order) is DuckDB's too: a
    # MergeTree keeps its sort key's order itself. The per-user history that retention reads
    # (avila.storage.user_history) is folded from the user days, which ClickHouse does not keep.
    rollup_tables = {
        "event_day_order",
        "rollup_user_history",
        "rollup_user_history_through",
        "rollup_user_history_late",
        "rollup_daily",
        "rollup_user_days",
        "rollup_compactions",
        "person_map",
        "person_map_state",
        "kept_sessions",
        "kept_keyed_sessions",
        "kept_pending",
        "kept_purchases",
    }
    assert rollup_tables <= set(duck_tables)
    for name, columns in duck_tables.items():
        if name in rollup_tables:
            continue
        assert name in TABLES, f"no ClickHouse table for DuckDB's {name}"
        ch_columns = [c for c, _ in TABLES[name].columns]
        # Same columns in the same order (positional INSERT ... VALUES works on both); the
        # ClickHouse ingest position has one more (the pending round).
        assert ch_columns[: len(columns)] == columns, name
    assert len(DUCKDB_MIGRATIONS) >= 6


def test_ttl_drops_old_rows_at_merge(tmp_path: Path) -> None:
    store = _open(tmp_path / "db", ttl_days=30)
    try:
        now = datetime.utcnow()
        cols = {n: [None, None] for n in EVENT_COLUMN_NAMES}
        epoch = datetime(1970, 1, 1)
        times = [now - timedelta(days=400), now - timedelta(days=1)]
        cols.update(
            project_id=["p", "p"],
            event_id=["old", "new"],
            user_id=["u", "u"],
            ts=[(t - epoch) // timedelta(microseconds=1) for t in times],
            received_at=[(now - epoch) // timedelta(microseconds=1)] * 2,
            event_type=["page_view"] * 2,
        )
        store.append_events(columns_to_arrow([cols]))
        assert (
            "TTL"
            in store.query("SELECT create_table_query FROM system.tables WHERE name = 'events'")[0][
                0
            ]
        )
        store.execute("OPTIMIZE TABLE events FINAL")
        assert store.query("SELECT event_id FROM events") == [("new",)]
    finally:
        store.close()


def test_cluster_ddl_is_replicated_distributed_and_sharded_by_user(tmp_path: Path) -> None:
    statements = all_statements(DDLOptions(cluster="analytics_prod", ttl_days=90))
    creates = [s for s in statements if s.startswith("CREATE TABLE")]
    for name in TABLES:
        local = next(
            s for s in creates if s.startswith(f"CREATE TABLE IF NOT EXISTS {name}_local ")
        )
        assert " ON CLUSTER analytics_prod " in local
        assert re.search(
            rf"ENGINE = Replicated(Replacing)?MergeTree\('/clickhouse/tables/{{shard}}/{{database}}/{name}_local', '{{replica}}'",
            local,
        ), local
        distributed = next(
            s for s in creates if s.startswith(f"CREATE TABLE IF NOT EXISTS {name} ")
        )
        assert (
            f"ON CLUSTER analytics_prod AS {name}_local ENGINE = Distributed(analytics_prod, currentDatabase(), {name}_local, "
            in distributed
        )
    events = next(s for s in creates if s.startswith("CREATE TABLE IF NOT EXISTS events "))
    assert events.endswith("cityHash64(project_id, user_id))")
    events_local = next(
        s for s in creates if s.startswith("CREATE TABLE IF NOT EXISTS events_local")
    )
    assert (
        "PARTITION BY toYYYYMM(ts) ORDER BY (project_id, toDate(ts), user_id, ts)" in events_local
    )
    assert "TTL toDateTime(ts) + INTERVAL 90 DAY" in events_local
    assert "replicated_deduplication_window = 1000" in events_local
    twin = next(s for s in creates if s.startswith("CREATE TABLE IF NOT EXISTS twin_desired_local"))
    assert "'{replica}', version)" in twin  # ReplicatedReplacingMergeTree keeps the highest version
    views = [s for s in statements if s.startswith("CREATE VIEW")]
    assert len(views) == 3 and all(" ON CLUSTER analytics_prod AS " in v for v in views)
    single = all_statements(DDLOptions())
    assert not any("ON CLUSTER" in s or "Replicated" in s or "Distributed" in s for s in single)
    # ClickHouse's own parser accepts every statement (chdb has no cluster to run them on).
    client = clickhouse_connect.get_client(interface="chdb", path=str(tmp_path / "parse"))
    try:
        for statement in statements:
            client.query("SELECT formatQuerySingleLine(%s)", parameters=[statement])
    finally:
        client.close()


@pytest.mark.parametrize("cluster", ["a b", "x; DROP DATABASE default", "c'"])
def test_a_bad_cluster_name_fails_at_start(cluster: str) -> None:
    with pytest.raises(ConfigError, match="AVILA_CLICKHOUSE_CLUSTER"):
        Settings.from_env(
            {"AVILA_STORAGE_URL": "chdb:///tmp/x", "AVILA_CLICKHOUSE_CLUSTER": cluster},
            env_file=None,
        )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("chdb://relative/dir", "absolute"),
        ("chdb:///", "absolute"),
        ("clickhouse://:8123/db", "host"),
        ("clickhouse://h:8123/bad-name", "database"),
        ("clickhouse://h:99999/db", "port"),
    ],
)
def test_bad_storage_urls_fail_at_start(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="AVILA_STORAGE_URL") as info:
        Settings.from_env({"AVILA_STORAGE_URL": url}, env_file=None)
    assert problem in info.value.message


def test_storage_urls_parse() -> None:
    t = parse_url("clickhouses://us%40er:p%3Ass@ch.example:9440/avila")
    assert (t.host, t.port, t.username, t.password, t.database, t.secure) == (
        "ch.example",
        9440,
        "us@er",
        "p:ss",
        "avila",
        True,
    )
    assert "p:ss" not in t.describe()
    assert parse_url("clickhouse://h").port == 8123 and parse_url("clickhouses://h").port == 8443
    assert parse_url("chdb:///var/lib/avila").embedded_path == Path("/var/lib/avila")
    s = Settings.from_env(
        {
            "AVILA_STORAGE_URL": "clickhouse://h/db",
            "AVILA_DATA_DIR": "/d",
            "AVILA_CLICKHOUSE_TTL_DAYS": "30",
            "AVILA_CLICKHOUSE_INSERT_QUORUM": "2",
        },
        env_file=None,
    )
    assert (s.clickhouse_ttl_days, s.clickhouse_insert_quorum) == (30, 2)
    assert s.duckdb_path == Path("/d/avila.clickhouse")  # names the local ingest log's place
