"""Schema migrations for the ClickHouse backend (server, cluster or embedded chdb).

Its own version sequence, recorded in ``schema_version`` like DuckDB's
(:mod:`avila.storage.duckdb.migrations`); the tables and columns are the same, so every query
and export sees the same relations on both backends.

Layout for scale:

- **Append-only tables** (events, telemetry, identities, telemetry_messages, alert firings and
  deliveries) are ``MergeTree``, partitioned by month of their time column and ordered for the
  queries: events by (project, day, user, time), so one project's day range is a contiguous
  range and a user's events sit together (funnels, retention, sessions); telemetry by (project,
  device, metric, time). Dimensions with few values are ``LowCardinality``.
- **Mutable tables** (devices, twin_desired, alarm_rules, experiments, alert_rules,
  anomalies, ingest_position) are ``ReplacingMergeTree`` keyed by their primary key: an update is an insert
  of the whole new row and the store reads with the ``final`` setting on, so a query sees only the
  newest row per key (twin_desired keeps the highest ``version``; the others the last inserted).
  Deletes are lightweight ``DELETE``. See :class:`avila.storage.clickhouse.store.ClickHouseStore`.
- **Retention**: ``AVILA_CLICKHOUSE_TTL_DAYS`` > 0 adds ``TTL`` on events, telemetry and telemetry
  message ids at creation (changing it later needs ``ALTER TABLE ... MODIFY TTL`` by hand).
- **Retried inserts**: the loader tags each block with ``insert_deduplication_token``; a plain
  MergeTree honours it only with ``non_replicated_deduplication_window`` set, so the tables the
  loader writes carry it (``replicated_deduplication_window`` on a cluster).
- **Cluster** (``AVILA_CLICKHOUSE_CLUSTER``): every table is created ``ON CLUSTER`` as
  ``<name>_local`` with the ``Replicated*`` engine, plus a ``Distributed`` table ``<name>``
  that every query and insert uses. The sharding key keeps what is read together on one shard:
  events and identities by ``cityHash64(project_id, user_id)`` (a user's events share a shard, so
  funnels stay local), telemetry and devices by device, mutable tables by their key (so all
  versions of a row meet on one shard and ``FINAL`` collapses them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from avila.errors import ConfigError

#: Recent insert blocks remembered per table for deduplication (loader rounds; a retry comes
#: within a few rounds, so this is generous).
DEDUP_WINDOW = 1000

_LOW_CARDINALITY = frozenset(
    {"project_id", "event_type", "device_type", "os", "browser", "country", "currency", "metric"}
)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    order_by: str
    sharding_key: str
    engine: str = "MergeTree"
    engine_args: str = ""
    partition_by: str = ""
    ttl_column: str = ""
    dedup: bool = False
    settings: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class DDLOptions:
    cluster: str = ""
    ttl_days: int = 0


def _event_type(name: str, nullable: bool, base: str) -> str:
    sql = f"Nullable({base})" if nullable else base
    if name in _LOW_CARDINALITY and base == "String":
        sql = f"LowCardinality({sql})"
    return sql


def _events_table() -> Table:
    from avila.storage.schema import EVENT_COLUMNS

    types = {"string": "String", "double": "Float64", "int64": "Int64"}
    cols: list[tuple[str, str]] = []
    for name, dtype, _ in EVENT_COLUMNS:
        if name in ("ts", "received_at"):
            cols.append((name, TS))
            continue
        nullable = name not in ("project_id", "event_id", "user_id", "event_type")
        cols.append((name, _event_type(name, nullable, types[str(dtype)])))
    return Table(
        "events",
        tuple(cols),
        order_by="(project_id, toDate(ts), user_id, ts)",
        sharding_key="cityHash64(project_id, user_id)",
        partition_by="toYYYYMM(ts)",
        ttl_column="ts",
        dedup=True,
    )


S = "String"
LS = "LowCardinality(String)"
NS = "Nullable(String)"
TS = "DateTime64(6, 'UTC')"
NTS = "Nullable(DateTime64(6, 'UTC'))"
F = "Float64"
NF = "Nullable(Float64)"

TELEMETRY = Table(
    "telemetry",
    (
        ("project_id", LS),
        ("device_id", S),
        ("ts", TS),
        ("metric", LS),
        ("value", F),
        ("received_at", TS),
    ),
    order_by="(project_id, device_id, metric, ts)",
    sharding_key="cityHash64(project_id, device_id)",
    partition_by="toYYYYMM(ts)",
    ttl_column="ts",
    dedup=True,
)
DEVICES = Table(
    "devices",
    (
        ("project_id", LS),
        ("device_id", S),
        ("device_type", "Nullable(String)"),
        ("attributes", NS),
        ("first_seen", NTS),
        ("last_seen", NTS),
    ),
    order_by="(project_id, device_id)",
    sharding_key="cityHash64(project_id, device_id)",
    engine="ReplacingMergeTree",
    dedup=True,
)
TWIN_DESIRED = Table(
    "twin_desired",
    (
        ("project_id", LS),
        ("device_id", S),
        ("desired", S),
        ("version", "Int64"),
        ("updated_at", TS),
    ),
    order_by="(project_id, device_id)",
    sharding_key="cityHash64(project_id, device_id)",
    engine="ReplacingMergeTree",
    engine_args="version",
)
ALARM_RULES = Table(
    "alarm_rules",
    (("project_id", LS), ("device_type", S), ("rules", S), ("updated_at", TS)),
    order_by="(project_id, device_type)",
    sharding_key="cityHash64(project_id, device_type)",
    engine="ReplacingMergeTree",
)
IDENTITIES = Table(
    "identities",
    (
        ("project_id", LS),
        ("anonymous_id", S),
        ("user_id", S),
        ("ts", TS),
        ("received_at", TS),
        ("source", "LowCardinality(Nullable(String))"),
        ("event_id", NS),
    ),
    order_by="(project_id, anonymous_id, ts)",
    sharding_key="cityHash64(project_id, user_id)",
    dedup=True,
)
INGEST_POSITION = Table(
    "ingest_position",
    (("log", S), ("position", "Int64"), ("loaded_at", NTS), ("pending", "Int64")),
    order_by="log",
    sharding_key="cityHash64(log)",
    engine="ReplacingMergeTree",
)
TELEMETRY_MESSAGES = Table(
    "telemetry_messages",
    (("project_id", LS), ("message_id", S), ("received_at", TS)),
    order_by="(project_id, message_id)",
    sharding_key="cityHash64(project_id, message_id)",
    partition_by="toYYYYMM(received_at)",
    ttl_column="received_at",
    dedup=True,
)
EXPERIMENTS = Table(
    "experiments",
    (
        ("project_id", LS),
        ("key", S),
        ("definition", S),
        ("start_time", TS),
        ("end_time", NTS),
        ("created_at", TS),
    ),
    order_by="(project_id, key)",
    sharding_key="cityHash64(project_id, key)",
    engine="ReplacingMergeTree",
)
ALERT_RULES = Table(
    "alert_rules",
    (("project_id", LS), ("rule_id", S), ("name", S), ("spec", S), ("created_at", TS)),
    order_by="(project_id, rule_id)",
    sharding_key="cityHash64(project_id, rule_id)",
    engine="ReplacingMergeTree",
)
ALERT_FIRINGS = Table(
    "alert_firings",
    (
        ("project_id", LS),
        ("firing_id", S),
        ("rule_id", S),
        ("rule_name", S),
        ("value", NF),
        ("op", LS),
        ("threshold", F),
        ("fired_at", TS),
        ("destinations", S),
    ),
    order_by="(project_id, rule_id, fired_at)",
    sharding_key="cityHash64(project_id, rule_id)",
    partition_by="toYYYYMM(fired_at)",
)
ALERT_DELIVERIES = Table(
    "alert_deliveries",
    (
        ("project_id", LS),
        ("firing_id", S),
        ("position", "Int32"),
        ("status", LS),
        ("attempts", "Int32"),
        ("error", NS),
        ("finished_at", TS),
    ),
    order_by="(project_id, firing_id, position)",
    sharding_key="cityHash64(project_id, firing_id)",
    partition_by="toYYYYMM(finished_at)",
)

ANOMALIES = Table(
    "anomalies",
    (
        ("project_id", LS),
        ("anomaly_id", "Int64"),
        ("metric", LS),
        ("detector", LS),
        ("bucket_start", S),
        ("bucket_seconds", "Nullable(Int32)"),
        ("value", NF),
        ("expected", NF),
        ("lower", NF),
        ("upper", NF),
        ("score", NF),
        ("detected_at", S),
    ),
    order_by="(project_id, metric, detector, bucket_start)",
    sharding_key="cityHash64(project_id, metric)",
    engine="ReplacingMergeTree",
)

#: Identity stitching views, the same relations as DuckDB's (see its migration 3). ClickHouse
#: aliases are global in a query, hence the qualified names; the LEFT JOIN fills a missing
#: match with '' (not NULL) unless join_use_nulls is on, so both are treated as "no link".
IDENTITY_VIEWS = (
    "CREATE VIEW IF NOT EXISTS {db}identity_links{on_cluster} AS SELECT i.project_id AS"
    " project_id, i.anonymous_id AS anonymous_id, argMin(i.user_id, (i.ts, i.received_at,"
    " i.user_id)) AS user_id FROM {db}identities AS i WHERE i.anonymous_id <> i.user_id"
    " GROUP BY i.project_id, i.anonymous_id",
    "CREATE VIEW IF NOT EXISTS {db}identity_resolved{on_cluster} AS WITH RECURSIVE walk AS"
    " (SELECT project_id, anonymous_id, user_id, 1 AS depth FROM {db}identity_links UNION ALL"
    " SELECT w.project_id, w.anonymous_id, l.user_id, w.depth + 1 FROM walk AS w JOIN"
    " {db}identity_links AS l ON l.project_id = w.project_id AND l.anonymous_id = w.user_id"
    " WHERE w.depth < 8) SELECT project_id, anonymous_id, argMax(user_id, depth) AS user_id"
    " FROM walk GROUP BY project_id, anonymous_id",
    "CREATE VIEW IF NOT EXISTS {db}events_resolved{on_cluster} AS SELECT e.* REPLACE"
    " (if(r.user_id IS NULL OR r.user_id = '', e.user_id, r.user_id) AS user_id)"
    " FROM {db}events AS e LEFT JOIN {db}identity_resolved AS r"
    " ON r.project_id = e.project_id AND r.anonymous_id = e.user_id",
)

#: Migration 8: a cycle of identity links (a -> b then b -> a, or a longer ring) is one person,
#: the same rows as DuckDB's migration 11 (see there): the latest link of a cycle of at most 8
#: links is not followed. ClickHouse inlines a CTE wherever it is named, so the form differs:
#: one walk over the earliest links from every id (depth 0: the id itself) until it is back at
#: its start or 8 links on; ``closing`` (the ids whose link is the latest of their cycle) comes
#: from the same walk, and an id resolves to the first closing id its walk meets within 7 links
#: (none: where the walk ends; itself: no row). ``CREATE OR REPLACE``: idempotent, and it
#: replaces migration 3's view in stores created before (``events_resolved`` reads it by name).
IDENTITY_CYCLES_VIEWS = (
    "CREATE OR REPLACE VIEW {db}identity_resolved{on_cluster} AS WITH RECURSIVE links AS"
    " (SELECT i.project_id AS project_id, i.anonymous_id AS anonymous_id,"
    " argMin(i.user_id, (i.ts, i.received_at, i.user_id)) AS user_id,"
    " min((i.ts, i.received_at, i.user_id)) AS k FROM {db}identities AS i"
    " WHERE i.anonymous_id <> i.user_id GROUP BY i.project_id, i.anonymous_id),"
    " walk AS (SELECT project_id, anonymous_id AS start, anonymous_id AS cur, 0 AS depth"
    " FROM links UNION ALL SELECT w.project_id, w.start, l.user_id, w.depth + 1 FROM walk AS w"
    " JOIN links AS l ON l.project_id = w.project_id AND l.anonymous_id = w.cur"
    " WHERE w.depth < 8 AND (w.depth = 0 OR w.cur <> w.start)),"
    " closing AS (SELECT w.project_id AS project_id, w.start AS anonymous_id, 1 AS stop"
    " FROM walk AS w JOIN links AS l ON l.project_id = w.project_id AND l.anonymous_id = w.cur"
    " GROUP BY w.project_id, w.start HAVING max(w.depth > 0 AND w.cur = w.start) = 1"
    " AND argMax(w.cur, l.k) = w.start)"
    " SELECT w.project_id AS project_id, w.start AS anonymous_id,"
    " if(max(coalesce(c.stop, 0) = 1 AND w.depth < 8) = 1,"
    " argMinIf(w.cur, w.depth, coalesce(c.stop, 0) = 1 AND w.depth < 8),"
    " argMax(w.cur, w.depth)) AS user_id FROM walk AS w LEFT JOIN closing AS c"
    " ON c.project_id = w.project_id AND c.anonymous_id = w.cur GROUP BY w.project_id, w.start"
    " HAVING max(coalesce(c.stop, 0) = 1 AND w.depth = 0) = 0",
)

SCHEMA_VERSION_COLUMNS = (("version", "UInt32"), ("description", S), ("applied_at", TS))

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_cluster_name(cluster: str) -> str:
    if cluster and not _NAME.match(cluster):
        raise ConfigError(
            f"AVILA_CLICKHOUSE_CLUSTER must be a cluster name (letters, digits, _), got {cluster!r}"
        )
    return cluster


def table_ddl(table: Table, options: DDLOptions) -> list[str]:
    """CREATE statements for ``table``: one on a single node, two on a cluster (the replicated
    ``_local`` table and the ``Distributed`` table over it)."""
    cols = ", ".join(f"`{name}` {sql_type}" for name, sql_type in table.columns)
    settings = list(table.settings)
    cluster = check_cluster_name(options.cluster)
    if table.dedup:
        settings.append(
            f"replicated_deduplication_window = {DEDUP_WINDOW}"
            if cluster
            else f"non_replicated_deduplication_window = {DEDUP_WINDOW}"
        )
    if cluster:
        engine = (
            f"Replicated{table.engine}('/clickhouse/tables/{{shard}}/{{database}}/"
            f"{table.name}_local', '{{replica}}'{', ' + table.engine_args if table.engine_args else ''})"
        )
    else:
        engine = f"{table.engine}({table.engine_args})"
    clauses = [f"ENGINE = {engine}"]
    if table.partition_by:
        clauses.append(f"PARTITION BY {table.partition_by}")
    clauses.append(f"ORDER BY {table.order_by}")
    if table.ttl_column and options.ttl_days > 0:
        clauses.append(f"TTL toDateTime({table.ttl_column}) + INTERVAL {int(options.ttl_days)} DAY")
    if settings:
        clauses.append("SETTINGS " + ", ".join(settings))
    if not cluster:
        return [f"CREATE TABLE IF NOT EXISTS {table.name} ({cols}) " + " ".join(clauses)]
    on = f" ON CLUSTER {cluster}"
    return [
        f"CREATE TABLE IF NOT EXISTS {table.name}_local{on} ({cols}) " + " ".join(clauses),
        f"CREATE TABLE IF NOT EXISTS {table.name}{on} AS {table.name}_local ENGINE ="
        f" Distributed({cluster}, currentDatabase(), {table.name}_local, {table.sharding_key})",
    ]


def views_ddl(options: DDLOptions) -> list[str]:
    return _views(IDENTITY_VIEWS, options)


def _views(views: Sequence[str], options: DDLOptions) -> list[str]:
    on = f" ON CLUSTER {check_cluster_name(options.cluster)}" if options.cluster else ""
    return [view.format(db="", on_cluster=on) for view in views]


def _tables(*tables: Table) -> Callable[[DDLOptions], list[str]]:
    return lambda options: [s for t in tables for s in table_ddl(t, options)]


MIGRATIONS: tuple[tuple[int, str, Callable[[DDLOptions], list[str]]], ...] = (
    (1, "events table", _tables(_events_table())),
    (
        2,
        "industry 4.0: telemetry, devices, twin_desired, alarm_rules",
        _tables(TELEMETRY, DEVICES, TWIN_DESIRED, ALARM_RULES),
    ),
    (
        3,
        "identities and events_resolved (identity stitching)",
        lambda o: _tables(IDENTITIES)(o) + views_ddl(o),
    ),
    (
        4,
        "ingest log position and telemetry message ids",
        _tables(INGEST_POSITION, TELEMETRY_MESSAGES),
    ),
    (5, "experiments (A/B test definitions)", _tables(EXPERIMENTS)),
    (
        6,
        "alerts: alert_rules, alert_firings, alert_deliveries",
        _tables(ALERT_RULES, ALERT_FIRINGS, ALERT_DELIVERIES),
    ),
    (7, "anomalies: detected anomalies (avila.ml.monitoring)", _tables(ANOMALIES)),
    (
        8,
        "identity_resolved: a cycle of links is one person (avila.identity)",
        lambda o: _views(IDENTITY_CYCLES_VIEWS, o),
    ),
)

#: Tables every append/update helper may name (the catalog check of the store comes on top).
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        _events_table(),
        TELEMETRY,
        DEVICES,
        TWIN_DESIRED,
        ALARM_RULES,
        IDENTITIES,
        INGEST_POSITION,
        TELEMETRY_MESSAGES,
        EXPERIMENTS,
        ALERT_RULES,
        ALERT_FIRINGS,
        ALERT_DELIVERIES,
        ANOMALIES,
    )
}


def schema_version_ddl(options: DDLOptions) -> list[str]:
    table = Table(
        "schema_version",
        SCHEMA_VERSION_COLUMNS,
        order_by="version",
        sharding_key="version",
        engine="ReplacingMergeTree",
    )
    statements = table_ddl(table, options)
    return statements[:1]  # per shard (replicated), never distributed: each shard migrates


def all_statements(options: DDLOptions) -> list[str]:
    """Every DDL statement of every migration, in order (for review and the cluster test)."""
    out = schema_version_ddl(options)
    for _, _, build in MIGRATIONS:
        out += build(options)
    return out


def migrate(
    command: Callable[[str, Sequence[Any] | None], Any],
    query: Callable[[str, Sequence[Any] | None], Sequence[tuple[Any, ...]]],
    options: DDLOptions,
) -> int:
    """Bring the database to the newest schema; returns the resulting version.

    ClickHouse DDL is not transactional: each statement is idempotent (IF NOT EXISTS), and a
    version is recorded after all its statements ran, so an interrupted migration reruns whole.
    """
    for statement in schema_version_ddl(options):
        command(statement, None)
    name = "schema_version_local" if options.cluster else "schema_version"
    applied = {int(row[0]) for row in query(f"SELECT version FROM {name}", None)}
    for version, description, build in MIGRATIONS:
        if version in applied:
            continue
        for statement in build(options):
            command(statement, None)
        command(
            f"INSERT INTO {name} (version, description, applied_at) VALUES (?, ?, now64(6))",
            [version, description],
        )
        applied.add(version)
    return max(applied, default=0)
