"""Settings: one class, read from environment variables and an optional ``.env`` file.

Every setting is declared once in :data:`SETTINGS` with its variable, default and help text; the
configuration table in docs/configuration.md is tested against this list. Invalid values fail at
start with a :class:`~avila.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from avila.errors import ConfigError
from avila.setting_parsers import PARSERS


@dataclass(frozen=True)
class SettingSpec:
    """How one setting is read: its variable(s), default and help text."""

    name: str
    env: str
    default: str
    help: str
    aliases: tuple[str, ...] = ()


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("host", "HOST", "0.0.0.0", "Interface the HTTP server binds to."),
    SettingSpec("port", "PORT", "3000", "TCP port of the HTTP server (1-65535)."),
    SettingSpec(
        "log_level",
        "LOG_LEVEL",
        "info",
        "Log level: trace, debug, info, warning, error. `RUST_LOG` is accepted as an alias.",
        aliases=("RUST_LOG",),
    ),
    SettingSpec(
        "api_keys",
        "API_KEYS",
        "",
        "Comma-separated bootstrap API keys; each has every scope on project `default`.",
    ),
    SettingSpec(
        "enable_cors", "ENABLE_CORS", "false", "Answer CORS preflights and add CORS headers."
    ),
    SettingSpec(
        "cors_origins",
        "CORS_ORIGINS",
        "*",
        "Comma-separated allowed origins for CORS (`*` allows any).",
    ),
    SettingSpec(
        "rate_limit_per_minute",
        "RATE_LIMIT_PER_MINUTE",
        "1000",
        "Requests per minute allowed per API key; 0 disables rate limiting.",
    ),
    SettingSpec(
        "data_dir", "AVILA_DATA_DIR", "./data", "Directory for the embedded store and keys."
    ),
    SettingSpec(
        "storage_url",
        "AVILA_STORAGE_URL",
        "",
        "Store location: `duckdb:///<path>` (default `duckdb:///<data dir>/avila.duckdb`),"
        " `chdb:///<absolute dir>` (embedded ClickHouse) or `clickhouse://user:pass@host:8123/db`"
        " (`clickhouses://` for TLS).",
    ),
    SettingSpec(
        "clickhouse_cluster",
        "AVILA_CLICKHOUSE_CLUSTER",
        "",
        "ClickHouse cluster name: tables are created `ON CLUSTER` as ReplicatedMergeTree plus"
        " Distributed, sharded by user. Empty: single node.",
    ),
    SettingSpec(
        "clickhouse_ttl_days",
        "AVILA_CLICKHOUSE_TTL_DAYS",
        "0",
        "ClickHouse: delete events, telemetry and MQTT message ids older than this many days"
        " (set when the tables are created). 0: keep forever.",
    ),
    SettingSpec(
        "clickhouse_insert_quorum",
        "AVILA_CLICKHOUSE_INSERT_QUORUM",
        "0",
        "ClickHouse cluster: replicas that must confirm each ingest-log block before it counts as"
        " loaded (`insert_quorum`). 0: off.",
    ),
    SettingSpec(
        "duckdb_memory_limit",
        "AVILA_DUCKDB_MEMORY_LIMIT",
        "50%",
        "Cap on DuckDB's memory in the store process: `4GB` (at least `16MB`), or a share of physical RAM such as `50%`; empty: DuckDB's own default (80 % of RAM).",
    ),
    SettingSpec(
        "duckdb_threads",
        "AVILA_DUCKDB_THREADS",
        "0",
        "Threads DuckDB may use in the store process (queries and the ingest loader); 0: one per"
        " core. Fewer leaves cores to the server, at the cost of slower queries and loading.",
    ),
    SettingSpec(
        "query_timeout",
        "AVILA_QUERY_TIMEOUT",
        "30",
        "Seconds a read query may run before it is cancelled with a 504 `query_timeout`; 0 turns the limit off.",
    ),
    SettingSpec(
        "query_workers",
        "AVILA_QUERY_WORKERS",
        "2",
        "Processes that run analytics queries, away from the process that acknowledges ingest"
        " (DuckDB store); more requests wait for a free one. 0: run them in threads of the server.",
    ),
    SettingSpec(
        "flush_max_events",
        "AVILA_FLUSH_MAX_EVENTS",
        "25000",
        "Ingest loader: the most rows one store transaction takes.",
    ),
    SettingSpec(
        "ingest_log_dir",
        "AVILA_INGEST_LOG_DIR",
        "",
        "Directory of the ingest log; default `<store file without .duckdb>.ingest-log` beside the DuckDB file.",
    ),
    SettingSpec(
        "ingest_backlog_max_bytes",
        "AVILA_INGEST_BACKLOG_MAX_BYTES",
        "2GB",
        "Ingest answers 503 while this much of the ingest log is not yet loaded into the store.",
    ),
    SettingSpec(
        "ingest_backlog_max_seconds",
        "AVILA_INGEST_BACKLOG_MAX_SECONDS",
        "60",
        "Ingest answers 503 while the oldest unloaded ingest-log entry is older than this.",
    ),
    SettingSpec(
        "mqtt_url",
        "AVILA_MQTT_URL",
        "",
        "MQTT broker to bridge telemetry from, `mqtt://[user:pass@]host[:port]` (`mqtts://` for"
        " TLS); empty: off.",
    ),
    SettingSpec(
        "mqtt_client_id",
        "AVILA_MQTT_CLIENT_ID",
        "avila-bridge",
        "MQTT client id; the broker keeps the QoS-1 session (and unacked readings) under it.",
    ),
    SettingSpec(
        "mqtt_share_group",
        "AVILA_MQTT_SHARE_GROUP",
        "",
        "Subscribe as MQTT shared subscription `$share/<group>/...`, so each message reaches one replica; give each replica its own `AVILA_MQTT_CLIENT_ID`. Empty: plain subscription.",
    ),
    SettingSpec(
        "redis_url",
        "AVILA_REDIS_URL",
        "",
        "Redis shared by all replicas (`redis://[:pass@]host:6379/0`, `rediss://` for TLS): API keys, idempotency, rate limits, live bus, trained models, change signals. Empty: all in-process (one replica). See docs/shared-state.md.",
    ),
    SettingSpec(
        "dedup_window_hours",
        "AVILA_DEDUP_WINDOW_HOURS",
        "24",
        "Idempotency window: a re-sent event_id is recognised for at least this many hours.",
    ),
    SettingSpec(
        "live_flush_ms",
        "AVILA_LIVE_FLUSH_MS",
        "200",
        "Live stream: events go to WebSocket subscribers in one frame per this many ms (50-1000).",
    ),
    SettingSpec(
        "live_max_events_per_second",
        "AVILA_LIVE_MAX_EVENTS_PER_SECOND",
        "1000",
        "Live stream: above this many events/s (per project and filter) subscribers get a uniform sample.",
    ),
    SettingSpec(
        "live_queue_frames",
        "AVILA_LIVE_QUEUE_FRAMES",
        "16",
        "Live stream: frames queued per connection before the oldest are dropped.",
    ),
    SettingSpec(
        "live_stall_timeout_seconds",
        "AVILA_LIVE_STALL_TIMEOUT_SECONDS",
        "30",
        "Live stream: a connection that cannot take a frame for this long is closed (4408).",
    ),
    SettingSpec(
        "live_max_connections_per_project",
        "AVILA_LIVE_MAX_CONNECTIONS_PER_PROJECT",
        "500",
        "Live stream: open WebSocket connections allowed per project (more: closed with 4429).",
    ),
    SettingSpec(
        "live_max_connections_per_key",
        "AVILA_LIVE_MAX_CONNECTIONS_PER_KEY",
        "100",
        "Live stream: open WebSocket connections allowed per API key (more: closed with 4429).",
    ),
    # Alerts (docs/alerts.md): email destinations use this SMTP server; empty host: no email.
    SettingSpec(
        "smtp_host", "AVILA_SMTP_HOST", "", "SMTP server for alert emails; empty: email off."
    ),
    SettingSpec("smtp_port", "AVILA_SMTP_PORT", "587", "SMTP server port (1-65535)."),
    SettingSpec(
        "smtp_tls",
        "AVILA_SMTP_TLS",
        "starttls",
        "SMTP transport security: `starttls`, `tls` (implicit, usually port 465) or `none`.",
    ),
    SettingSpec("smtp_user", "AVILA_SMTP_USER", "", "SMTP login user; empty: no login."),
    SettingSpec("smtp_password", "AVILA_SMTP_PASSWORD", "", "SMTP login password."),
    SettingSpec(
        "smtp_from", "AVILA_SMTP_FROM", "avila@localhost", "Sender address of alert emails."
    ),
    SettingSpec(
        "alerts_interval_seconds",
        "AVILA_ALERTS_INTERVAL_SECONDS",
        "1",
        "Seconds between two evaluations of every alert rule (0.1-3600).",
    ),
    SettingSpec(
        "alerts_delivery_attempts",
        "AVILA_ALERTS_DELIVERY_ATTEMPTS",
        "3",
        "Tries per alert destination before it is recorded as failed (1-10).",
    ),
    SettingSpec(
        "alerts_delivery_timeout_seconds",
        "AVILA_ALERTS_DELIVERY_TIMEOUT_SECONDS",
        "10",
        "Time limit of one delivery try to one destination, in seconds (0.1-300).",
    ),
)


def parse_setting(name: str, raw: str, label: str | None = None) -> Any:
    """One setting's value from its text, as for its variable; errors name ``label`` (default:
    the variable), e.g. a command-line flag."""
    spec = next(s for s in SETTINGS if s.name == name)
    return PARSERS[name](label or spec.env, raw)


@dataclass(frozen=True)
class Settings:
    """Validated settings; build with :meth:`Settings.from_env`."""

    host: str = "0.0.0.0"
    port: int = 3000
    log_level: str = "info"
    api_keys: tuple[str, ...] = ()
    enable_cors: bool = False
    cors_origins: tuple[str, ...] = ("*",)
    rate_limit_per_minute: int = 1000
    data_dir: Path = field(default_factory=lambda: Path("./data"))
    storage_url: str = ""
    clickhouse_cluster: str = ""
    clickhouse_ttl_days: int = 0
    clickhouse_insert_quorum: int = 0
    duckdb_memory_limit: str = "50%"
    duckdb_threads: int = 0
    query_timeout: float = 30.0
    query_workers: int = 2
    flush_max_events: int = 25_000
    ingest_log_dir: Path | None = None
    ingest_backlog_max_bytes: int = 2 << 30
    ingest_backlog_max_seconds: float = 60.0
    dedup_window_hours: int = 24
    mqtt_url: str = ""
    mqtt_client_id: str = "avila-bridge"
    mqtt_share_group: str = ""
    redis_url: str = field(default="", repr=False)
    live_flush_ms: int = 200
    live_max_events_per_second: int = 1000
    live_queue_frames: int = 16
    live_stall_timeout_seconds: int = 30
    live_max_connections_per_project: int = 500
    live_max_connections_per_key: int = 100
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_from: str = "avila@localhost"
    alerts_interval_seconds: float = 1.0
    alerts_delivery_attempts: int = 3
    alerts_delivery_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.storage_url:
            object.__setattr__(self, "storage_url", f"duckdb:///{self.data_dir / 'avila.duckdb'}")
        scheme = urlsplit(self.storage_url).scheme
        if scheme in ("chdb", "clickhouse", "clickhouses"):
            from avila.storage.clickhouse.migrations import check_cluster_name
            from avila.storage.clickhouse.target import parse_url

            parse_url(self.storage_url)
            check_cluster_name(self.clickhouse_cluster)
        elif scheme == "duckdb" and self.storage_url.rstrip("/") == "duckdb:":
            raise ConfigError(
                "AVILA_STORAGE_URL must name the DuckDB file, e.g. duckdb:///data/avila.duckdb;"
                f" got {self.storage_url!r}"
            )
        elif scheme != "duckdb" or not self.storage_url.startswith("duckdb:///"):
            raise ConfigError(
                "AVILA_STORAGE_URL must be duckdb:///path, chdb:///abs/dir or"
                f" clickhouse[s]://user:pass@host:port/db; got scheme {scheme!r}"
            )

    @property
    def duckdb_path(self) -> Path:
        """The local path the store is named after: the DuckDB file, the chdb directory, or for
        a ClickHouse server ``<data dir>/avila.clickhouse`` (nothing is stored there; the ingest
        log's default directory is named after it: ``<data dir>/avila.ingest-log``)."""
        scheme = urlsplit(self.storage_url).scheme
        if scheme == "chdb":
            return Path(urlsplit(self.storage_url).path)
        if scheme in ("clickhouse", "clickhouses"):
            return self.data_dir / "avila.clickhouse"
        # SQLAlchemy convention: duckdb:///relative/path, duckdb:////absolute/path.
        return Path(self.storage_url[len("duckdb:///") :])

    def ensure_directories(self) -> None:
        """Create the local directories the settings name (the data directory, the ingest log's,
        the DuckDB file's), so that a path that cannot hold them stops a command at once with a
        message naming its variable rather than a traceback from deep inside the store."""
        scheme = urlsplit(self.storage_url).scheme
        checks: list[tuple[str, Path]] = [("AVILA_DATA_DIR", self.data_dir)]
        if self.ingest_log_dir is not None:
            checks.append(("AVILA_INGEST_LOG_DIR", self.ingest_log_dir))
        if scheme in ("duckdb", "chdb"):
            checks.append(("AVILA_STORAGE_URL", self.duckdb_path.parent))
        for env, path in checks:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise ConfigError(f"{env} must name a directory; {str(path)!r} is a file") from None
            except OSError as exc:
                raise ConfigError(
                    f"{env} must name a directory Avila can create; {str(path)!r}: {exc.strerror}"
                ) from None
            if not os.access(path, os.W_OK | os.X_OK):
                raise ConfigError(f"{env} must name a writable directory; {str(path)!r} is not")
        if scheme == "duckdb" and self.duckdb_path.is_dir():
            raise ConfigError(
                f"AVILA_STORAGE_URL must name the DuckDB file; {str(self.duckdb_path)!r} is a"
                " directory"
            )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = ".env",
        **overrides: Any,
    ) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``) over an optional ``.env`` file.

        Real environment variables win over the file; keyword ``overrides`` (CLI flags) win over
        both.
        """
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            from dotenv import dotenv_values

            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)

        kwargs: dict[str, Any] = {}
        for spec in SETTINGS:
            env_name = next((n for n in (spec.env, *spec.aliases) if n in values), None)
            raw = values[env_name] if env_name else spec.default
            kwargs[spec.name] = PARSERS[spec.name](env_name or spec.env, raw)
        known = {f.name for f in fields(cls)}
        for name, value in overrides.items():
            if name not in known or value is None:
                continue
            # An override (a command-line flag) is held to the same rules as its variable:
            # ``--port 99999`` must not bind port 34463, ``--mqtt http://x`` must not start.
            textual = isinstance(value, str | int | float | os.PathLike)
            kwargs[name] = parse_setting(name, str(value)) if textual else value
        return cls(**kwargs)
