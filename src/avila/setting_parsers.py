"""Setting parsers: how each setting's raw text (from its variable, the ``.env`` file or a
command-line flag) becomes its value for :class:`avila.config.Settings`. Invalid text raises a
:class:`~avila.errors.ConfigError` naming the variable."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from avila.errors import ConfigError

MQTT_SCHEMES = ("mqtt", "tcp", "mqtts", "ssl")
LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(env: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{env} must be true or false, got {raw!r}")


def _parse_int(env: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{env} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{env} must be between {low} and {high}, got {value}")
    return value


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_log_level(env: str, raw: str) -> str:
    # RUST_LOG may look like "info" or "avila=debug,tower=warn": take the first level named.
    for token in raw.replace("=", ",").split(","):
        token = token.strip().lower()
        if token in LOG_LEVELS:
            return {"warn": "warning", "trace": "debug"}.get(token, token)
    raise ConfigError(f"{env} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")


_SHARE = re.compile(r"^\d+(\.\d+)?%$")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)


def _parse_float(env: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{env} must be a number, got {raw!r}") from None
    if not low <= value <= high:  # also rejects nan
        raise ConfigError(f"{env} must be between {low:g} and {high:g}, got {value:g}")
    return value


def _parse_choice(env: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{env} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _parse_memory(env: str, raw: str) -> str:
    value = raw.strip()
    if value and not (_MEMORY.match(value) or _SHARE.match(value)):
        raise ConfigError(
            f"{env} must be a size such as 512MB or 4GB, or a share of RAM such as 50%, got {raw!r}"
        )
    if _SHARE.match(value) and not 0 < float(value[:-1]) <= 100:
        raise ConfigError(f"{env}: a share of RAM must be above 0% and at most 100%, got {raw!r}")
    match = _MEMORY.match(value)
    if match and _size_in_bytes(value, match, decimal=True) < MIN_DUCKDB_MEMORY:
        # DuckDB cannot even open (replay the WAL of) a store below a few MB: it would fail at
        # start with an OutOfMemoryException traceback from the store process.
        raise ConfigError(f"{env} must be at least 16MB, got {raw!r}")
    return value


#: The smallest AVILA_DUCKDB_MEMORY_LIMIT accepted (a share of RAM is floored at 64MB).
MIN_DUCKDB_MEMORY = 16 * 10**6

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def _size_in_bytes(value: str, match: re.Match[str], *, decimal: bool) -> int:
    """Bytes of a matched ``<number><unit>``; ``decimal``: KB/MB/GB are powers of 1000 (DuckDB's
    ``memory_limit``), else powers of 1024."""
    unit = match.group(2).lower()
    binary = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}
    factor = _UNITS[unit] if decimal else binary.get(unit, _UNITS[unit])
    return int(float(value[: match.start(2)].strip()) * factor)


def _parse_bytes(env: str, raw: str) -> int:
    """``2GB`` (GB read as GiB, as DuckDB does), ``512MB``, or a number of bytes."""
    value = raw.strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    match = _MEMORY.match(value)
    if not match or _size_in_bytes(value, match, decimal=False) < 1:
        # "0GB" used to become 1 byte: every ingest request would answer 503.
        raise ConfigError(f"{env} must be a size above zero such as 512MB or 2GB, got {raw!r}")
    return _size_in_bytes(value, match, decimal=False)


def _url_host_and_port(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    try:
        return parts.hostname, parts.port
    except ValueError:  # a port that is not a number or is out of range
        return parts.hostname, -1


def _parse_mqtt_url(env: str, raw: str) -> str:
    # The bridge (industry40/mqtt.py) speaks mqtt:// and tcp://, and TLS as mqtts:// or ssl://.
    # A URL without a host (a typo such as ``mqtt:/broker``) must not fall back to localhost.
    url = raw.strip()
    if not url:
        return url
    host, port = _url_host_and_port(url)
    if urlsplit(url).scheme not in MQTT_SCHEMES or not host or port == -1:
        raise ConfigError(
            f"{env} must look like mqtt://[user:pass@]host[:port] (mqtts:// for TLS), got {raw!r}"
        )
    return url


def _parse_share_group(env: str, raw: str) -> str:
    group = raw.strip()
    if group and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", group):
        raise ConfigError(f"{env} must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'")
    return group


def _parse_redis_url(env: str, raw: str) -> str:
    url = raw.strip()
    if url and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{env} must look like redis://host:6379/0, got scheme {urlsplit(url).scheme!r}"
        )
    return url


#: How each setting's raw text becomes its value; ``env`` is the name used in error messages.
PARSERS: dict[str, Callable[[str, str], Any]] = {
    "host": lambda env, raw: raw.strip() or "0.0.0.0",
    "port": lambda env, raw: _parse_int(env, raw, 1, 65535),
    "log_level": _parse_log_level,
    "api_keys": lambda env, raw: _parse_list(raw),
    "enable_cors": _parse_bool,
    "cors_origins": lambda env, raw: _parse_list(raw) or ("*",),
    "rate_limit_per_minute": lambda env, raw: _parse_int(env, raw, 0, 10**9),
    "data_dir": lambda env, raw: Path(raw.strip() or "./data"),
    "storage_url": lambda env, raw: raw.strip(),
    "clickhouse_cluster": lambda env, raw: raw.strip(),
    "clickhouse_ttl_days": lambda env, raw: _parse_int(env, raw, 0, 100 * 366),
    "clickhouse_insert_quorum": lambda env, raw: _parse_int(env, raw, 0, 64),
    "duckdb_memory_limit": _parse_memory,
    "duckdb_threads": lambda env, raw: _parse_int(env, raw, 0, 1024),
    "query_timeout": lambda env, raw: _parse_float(env, raw, 0, 86_400),
    "query_workers": lambda env, raw: _parse_int(env, raw, 0, 64),
    "flush_max_events": lambda env, raw: _parse_int(env, raw, 1, 10_000_000),
    "ingest_log_dir": lambda env, raw: Path(raw.strip()) if raw.strip() else None,
    "ingest_backlog_max_bytes": _parse_bytes,
    "ingest_backlog_max_seconds": lambda env, raw: float(_parse_int(env, raw, 1, 86_400)),
    "dedup_window_hours": lambda env, raw: _parse_int(env, raw, 1, 24 * 365),
    "mqtt_url": _parse_mqtt_url,
    "mqtt_client_id": lambda env, raw: raw.strip() or "avila-bridge",
    "mqtt_share_group": _parse_share_group,
    "redis_url": _parse_redis_url,
    "live_flush_ms": lambda env, raw: _parse_int(env, raw, 50, 1000),
    "live_max_events_per_second": lambda env, raw: _parse_int(env, raw, 1, 10**7),
    "live_queue_frames": lambda env, raw: _parse_int(env, raw, 1, 10_000),
    "live_stall_timeout_seconds": lambda env, raw: _parse_int(env, raw, 1, 3600),
    "live_max_connections_per_project": lambda env, raw: _parse_int(env, raw, 1, 10**6),
    "live_max_connections_per_key": lambda env, raw: _parse_int(env, raw, 1, 10**6),
    "smtp_host": lambda env, raw: raw.strip(),
    "smtp_port": lambda env, raw: _parse_int(env, raw, 1, 65535),
    "smtp_tls": lambda env, raw: _parse_choice(env, raw, ("starttls", "tls", "none")),
    "smtp_user": lambda env, raw: raw.strip(),
    "smtp_password": lambda env, raw: raw,
    "smtp_from": lambda env, raw: raw.strip() or "avila@localhost",
    "alerts_interval_seconds": lambda env, raw: _parse_float(env, raw, 0.1, 3600),
    "alerts_delivery_attempts": lambda env, raw: _parse_int(env, raw, 1, 10),
    "alerts_delivery_timeout_seconds": lambda env, raw: _parse_float(env, raw, 0.1, 300),
}
