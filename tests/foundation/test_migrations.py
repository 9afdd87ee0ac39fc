"""Schema migrations: every missing version is applied, whatever order versions landed in."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from avila.storage.duckdb import migrations
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


def test_a_fresh_database_whose_last_migration_fails_keeps_none_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new database takes every migration in one transaction: a failure in the last one
    leaves no half-built schema behind (the next start begins again from nothing)."""

    def fails(conn: duckdb.DuckDBPyConnection) -> None:
        raise RuntimeError("disk gone")

    newest = max(v for v, _, _ in MIGRATIONS)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, (newest + 1, "fails", (fails,))))
    conn = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    with pytest.raises(RuntimeError, match="disk gone"):
        migrations.migrate(conn)
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (0,)
    tables = {t for (t,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {"schema_version"}
