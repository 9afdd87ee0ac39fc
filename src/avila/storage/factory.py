"""Open the store named by a storage URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from avila.errors import ConfigError
from avila.storage.base import Store

if TYPE_CHECKING:
    from avila.storage.clickhouse.target import ClickHouseOptions


def open_store(
    storage_url: str,
    *,
    read_only: bool = False,
    in_process: bool = True,
    lock_wait: float = 15.0,
    memory_limit: str = "",
    query_timeout: float = 0,
    threads: int | None = None,
    clickhouse: ClickHouseOptions | None = None,
) -> Store:
    """Open ``duckdb:///relative/path`` or ``duckdb:////absolute/path``; ``chdb:///abs/dir``
    (embedded ClickHouse) or ``clickhouse[s]://user:pass@host:port/db`` (a ClickHouse server).

    ``in_process=False`` runs DuckDB in a child process (what the server does; see
    :mod:`avila.storage.duckdb.process`). ``lock_wait`` is how long to wait for another
    process (a stopping server) to release the file; CLI tools pass a short one.
    ``query_timeout``: reads are cancelled past this many seconds (0: never); DuckDB by a
    watchdog thread, ClickHouse by its ``max_execution_time`` setting. ``threads``: DuckDB's
    thread count (None: one per core).

    ClickHouse stores always run in this process (see :mod:`avila.storage.clickhouse.store`);
    ``clickhouse`` defaults to the ``AVILA_CLICKHOUSE_*`` settings of the environment, so every
    tool creates the schema the server would. ``read_only`` opens without migrating.
    """
    if storage_url.startswith("duckdb:///"):
        path = Path(storage_url[len("duckdb:///") :])
        if not in_process and not read_only:
            from avila.storage.duckdb.process import ProcessStore

            return ProcessStore(
                path, threads=threads, memory_limit=memory_limit, query_timeout=query_timeout
            )
        from avila.storage.duckdb.store import DuckDBStore

        return DuckDBStore(
            path,
            read_only=read_only,
            lock_wait=lock_wait,
            memory_limit=memory_limit,
            query_timeout=query_timeout,
            threads=threads,
        )
    if storage_url.split(":", 1)[0] in ("chdb", "clickhouse", "clickhouses"):
        from avila.storage.clickhouse.store import ClickHouseStore
        from avila.storage.clickhouse.target import ClickHouseOptions, parse_url

        target = parse_url(storage_url)
        options = clickhouse if clickhouse is not None else ClickHouseOptions.from_env()
        return ClickHouseStore(target, options, migrate=not read_only, query_timeout=query_timeout)
    raise ConfigError(f"AVILA_STORAGE_URL: unsupported storage URL {storage_url!r}")
