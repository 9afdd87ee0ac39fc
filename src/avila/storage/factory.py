"""Open the store named by a storage URL."""

from __future__ import annotations

from pathlib import Path

from avila.errors import ConfigError
from avila.storage.base import Store


def open_store(
    storage_url: str,
    *,
    read_only: bool = False,
    in_process: bool = True,
    lock_wait: float = 15.0,
    memory_limit: str = "",
    query_timeout: float = 0,
) -> Store:
    """Open ``duckdb:///relative/path`` or ``duckdb:////absolute/path``.

    ``in_process=False`` runs DuckDB in a child process (what the server does; see
    :mod:`avila.storage.duckdb.process`). ``lock_wait`` is how long to wait for another
    process (a stopping server) to release the file; CLI tools pass a short one.
    ``query_timeout``: reads are cancelled past this many seconds (0: never).
    """
    if storage_url.startswith("duckdb:///"):
        path = Path(storage_url[len("duckdb:///") :])
        if not in_process and not read_only:
            from avila.storage.duckdb.process import ProcessStore

            return ProcessStore(path, memory_limit=memory_limit, query_timeout=query_timeout)
        from avila.storage.duckdb.store import DuckDBStore

        return DuckDBStore(
            path,
            read_only=read_only,
            lock_wait=lock_wait,
            memory_limit=memory_limit,
            query_timeout=query_timeout,
        )
    raise ConfigError(f"AVILA_STORAGE_URL: unsupported storage URL {storage_url!r}")
