"""Where a ClickHouse store lives: parsed from ``AVILA_STORAGE_URL``, and the options that shape
its schema and inserts (``AVILA_CLICKHOUSE_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from avila.errors import ConfigError

SCHEMES = ("chdb", "clickhouse", "clickhouses")


@dataclass(frozen=True)
class ClickHouseTarget:
    """``chdb:///abs/path`` (embedded engine, a directory) or
    ``clickhouse[s]://user:pass@host:port/database`` (a server; ``clickhouses`` is TLS)."""

    embedded_path: Path | None = None
    host: str = ""
    port: int = 0
    username: str = "default"
    password: str = ""
    database: str = "default"
    secure: bool = False

    @property
    def is_embedded(self) -> bool:
        return self.embedded_path is not None

    def describe(self) -> str:
        """The URL without its password (for logs and errors)."""
        if self.embedded_path is not None:
            return f"chdb://{self.embedded_path}"
        scheme = "clickhouses" if self.secure else "clickhouse"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.database}"


def parse_url(url: str) -> ClickHouseTarget:
    """Parse a ClickHouse storage URL; ConfigError naming the problem if it is not one."""
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ConfigError(
                f"AVILA_STORAGE_URL: chdb URLs name an absolute directory, chdb:///abs/path;"
                f" got {url!r}"
            )
        return ClickHouseTarget(embedded_path=Path(unquote(parts.path)))
    if parts.scheme in ("clickhouse", "clickhouses"):
        secure = parts.scheme == "clickhouses"
        if not parts.hostname:
            raise ConfigError(
                f"AVILA_STORAGE_URL: a ClickHouse server URL needs a host,"
                f" clickhouse://user:pass@host:8123/db; got {parts.scheme}://..."
            )
        try:
            port = parts.port or (8443 if secure else 8123)
        except ValueError as exc:
            raise ConfigError(f"AVILA_STORAGE_URL: bad port: {exc}") from None
        database = unquote(parts.path.strip("/")) or "default"
        if "/" in database or not database.replace("_", "").isalnum():
            raise ConfigError(
                f"AVILA_STORAGE_URL: the database name must be letters, digits and _; got"
                f" {database!r}"
            )
        return ClickHouseTarget(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database=database,
            secure=secure,
        )
    raise ConfigError(f"AVILA_STORAGE_URL: not a ClickHouse URL: {parts.scheme}://...")


@dataclass(frozen=True)
class ClickHouseOptions:
    #: AVILA_CLICKHOUSE_CLUSTER: create tables ON CLUSTER as Replicated + Distributed.
    cluster: str = ""
    #: AVILA_CLICKHOUSE_TTL_DAYS: drop events/telemetry older than this (0: keep forever).
    ttl_days: int = 0
    #: AVILA_CLICKHOUSE_INSERT_QUORUM: replicas that must confirm a loader insert (0: off).
    insert_quorum: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> ClickHouseOptions:
        return cls(
            cluster=settings.clickhouse_cluster,
            ttl_days=settings.clickhouse_ttl_days,
            insert_quorum=settings.clickhouse_insert_quorum,
        )

    @classmethod
    def from_env(cls) -> ClickHouseOptions:
        """The options of the environment (and ``.env``), as the server reads them: every tool
        opening the store must create the same schema."""
        from avila.config import Settings

        return cls.from_settings(Settings.from_env())
