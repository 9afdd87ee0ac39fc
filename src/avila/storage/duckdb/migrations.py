"""Schema migrations for the DuckDB backend: applied in order, recorded in ``schema_version``."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from avila.storage.schema import EVENT_COLUMNS

_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    pa.int64(): "BIGINT",
    pa.timestamp("us"): "TIMESTAMP",
}


def _events_ddl() -> str:
    cols = []
    for name, dtype, _ in EVENT_COLUMNS:
        # JSON columns are VARCHAR: the edge already validated them, and DuckDB would parse
        # every value again on insert to check a JSON type.
        sql_type = _DUCKDB_TYPES[dtype]
        not_null = " NOT NULL" if name in ("project_id", "event_id", "user_id", "ts") else ""
        cols.append(f"{name} {sql_type}{not_null}")
    return "CREATE TABLE IF NOT EXISTS events (" + ", ".join(cols) + ")"


MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = ((1, "events table", (_events_ddl(),)),)


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Bring the database to the newest schema; returns the resulting version."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)"
    )
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    current = int(row[0]) if row else 0
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN TRANSACTION")
        for statement in statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)", [version, description]
        )
        conn.execute("COMMIT")
        current = version
    return current
