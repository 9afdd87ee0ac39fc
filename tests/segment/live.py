"""A dedicated server whose stored rows a test reads back after stopping it."""

from __future__ import annotations

from pathlib import Path

import duckdb

from avila.security.keys import KeyStore
from avila.testing import ServerProcess

ALL_SCOPES_KEY = "segment-test-key"


class LiveServer:
    """A server with an all-scopes key and an ingest-only key; :meth:`stored` stops it and
    opens its DuckDB file read-only (the store admits one process at a time)."""

    def __init__(self, data_dir: Path) -> None:
        keys = KeyStore(data_dir / "keys.sqlite")
        self.ingest_key, _ = keys.create("default", ["ingest"], name="web")
        self.read_key, _ = keys.create("default", ["read"], name="dashboard")
        self.key = ALL_SCOPES_KEY
        self.process = ServerProcess(
            data_dir,
            env={"API_KEYS": ALL_SCOPES_KEY, "RATE_LIMIT_PER_MINUTE": "0", "ENABLE_CORS": "true"},
        )
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        return self.process.url

    def stored(self) -> duckdb.DuckDBPyConnection:
        assert self.process.stop() == 0, self.process.log()
        return duckdb.connect(str(self.data_dir / "avila.duckdb"), read_only=True)
