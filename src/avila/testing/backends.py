"""Real stores of every backend for the shared suites (analytics, ML, Industry 4.0 queries).

``duckdb``: a DuckDB file. ``chdb``: the embedded ClickHouse engine through
:class:`avila.storage.clickhouse.store.ClickHouseStore`. ``clickhouse``: a live server, only
when ``CLICKHOUSE_URL`` (``clickhouse://user:pass@host:8123/db``) is set (the optional live
suite; see docs/scale-out.md), a fresh database per store, dropped at close.

chdb admits one data directory per process at a time, and the suites keep a module's store
open while single tests open their own. So every chdb store of this process shares one engine
directory and gets its own database in it (the real store and migrations, connected with
``database=``); a server store does the same on the server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from avila.storage import Store, open_store

BACKENDS: list[str] = ["chdb", "duckdb"] + (
    ["clickhouse"] if os.environ.get("CLICKHOUSE_URL") else []
)

_engine_dir: Path | None = None
#: Migrated, empty chdb databases of closed stores, reused by the next store.
_free_databases: list[str] = []


def _shared_engine_dir() -> Path:
    global _engine_dir
    if _engine_dir is None:
        _engine_dir = Path(tempfile.mkdtemp(prefix="avila-chdb-"))
        import atexit

        atexit.register(shutil.rmtree, _engine_dir, True)
    return _engine_dir


def _clickhouse_store(url: str, database: str) -> Store:
    import clickhouse_connect

    from avila.storage.clickhouse.store import SESSION_SETTINGS, ClickHouseStore
    from avila.storage.clickhouse.target import ClickHouseOptions, parse_url

    target = parse_url(url)

    class DatabaseStore(ClickHouseStore):
        """The store on database ``database`` (chdb: of the shared engine directory)."""

        def _connect(self, database_: str | None = None) -> Any:
            if self.target.embedded_path is None:
                return super()._connect(database_)
            return clickhouse_connect.get_client(
                interface="chdb",
                path=str(self.target.embedded_path),
                database=database_ or database,
                settings=SESSION_SETTINGS,
            )

        def close(self) -> None:
            try:
                if self.target.is_embedded:
                    # Emptied and kept for the next store: migrating a new database costs
                    # about a second; emptying the few filled tables, milliseconds.
                    filled = self._query_rows(
                        "SELECT name FROM system.tables WHERE database = currentDatabase()"
                        " AND total_rows > 0 AND name NOT IN ('schema_version', 'ingest_position')"
                    )
                    for (table,) in filled:
                        self._client().command(f"TRUNCATE TABLE `{table}`")
                    _free_databases.append(database)
                else:
                    self._client().command(f"DROP DATABASE IF EXISTS `{database}`")
            finally:
                super().close()

    if target.is_embedded:
        setup = clickhouse_connect.get_client(interface="chdb", path=str(target.embedded_path))
        try:
            setup.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        finally:
            setup.close()
        return DatabaseStore(target, ClickHouseOptions())
    return DatabaseStore(replace(target, database=database), ClickHouseOptions())


def open_backend(backend: str, tmp: Path) -> Store:
    """A fresh, empty store of ``backend`` (``tmp``: a directory for its files)."""
    name = f"avila_test_{uuid.uuid4().hex[:12]}"
    if backend == "duckdb":
        return open_store("duckdb:///" + str(tmp / "analytics.duckdb"))
    if backend == "chdb":
        name = _free_databases.pop() if _free_databases else name
        return _clickhouse_store(f"chdb://{_shared_engine_dir()}", name)
    if backend == "clickhouse":
        return _clickhouse_store(os.environ["CLICKHOUSE_URL"], name)
    raise ValueError(backend)
