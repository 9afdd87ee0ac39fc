"""Open the store named by a storage URL."""

from __future__ import annotations

from pathlib import Path

from avila.errors import ConfigError
from avila.storage.base import Store


def open_store(storage_url: str, *, read_only: bool = False) -> Store:
    """Open ``duckdb:///relative/path`` or ``duckdb:////absolute/path``."""
    if storage_url.startswith("duckdb:///"):
        from avila.storage.duckdb.store import DuckDBStore

        return DuckDBStore(Path(storage_url[len("duckdb:///") :]), read_only=read_only)
    raise ConfigError(f"AVILA_STORAGE_URL: unsupported storage URL {storage_url!r}")
