"""Schema migrations: every missing version is applied, whatever order versions landed in."""

from __future__ import annotations

from pathlib import Path

import duckdb

from avila.storage.duckdb.migrations import MIGRATIONS, migrate


def test_a_fresh_database_gets_every_migration(tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    assert migrate(conn) == max(v for v, _, _ in MIGRATIONS)
    versions = [
        v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
    ]
    assert versions == sorted(v for v, _, _ in MIGRATIONS)


def test_a_gap_below_the_newest_version_is_filled(tmp_path: Path) -> None:
    # A data directory that recorded a later migration before an earlier one existed.
    conn = duckdb.connect(str(tmp_path / "gap.duckdb"))
    migrate(conn)
    conn.execute("DELETE FROM schema_version WHERE version = 2")
    conn.execute("DROP TABLE alarm_rules")
    migrate(conn)
    assert conn.execute("SELECT count(*) FROM alarm_rules").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM schema_version WHERE version = 2").fetchone() == (1,)
