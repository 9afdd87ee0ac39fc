"""API keys: each belongs to one project and carries scopes; only a hash is stored.

Keys live in a small SQLite file beside the store rather than in DuckDB because DuckDB admits
one writing process per file: ``avila keys create`` must work while ``avila serve`` holds the
event store. The server re-reads the file when it changes, so a revoke takes effect within a
second without a restart.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from avila.errors import ValidationFailed

SCOPES = ("ingest", "read", "admin")
#: How long a known key's principal is served without looking at the keys file again (two
#: ``stat`` calls and a lock: ~5 of the ~5.6 us a stored key cost per request). A revoke by this
#: process applies at once; by another process (``avila keys revoke``) within this time plus
#: the file check. An unknown key always checks the file (a key created elsewhere works at once).
KEY_RECHECK_S = 0.25
DEFAULT_PROJECT = "default"
_PROJECT_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id (never the key), its project and scopes."""

    key_id: str
    project_id: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    project_id: str
    scopes: tuple[str, ...]
    name: str
    created_at: str
    revoked_at: str | None


def hash_key(key: str) -> str:
    # Keys are 32 random bytes, so a fast unsalted hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def validate_project(project_id: str) -> str:
    if not project_id or len(project_id) > 64 or not set(project_id) <= _PROJECT_CHARS:
        raise ValidationFailed(
            "project must be 1-64 characters of a-z, 0-9, '_' or '-'",
            code="invalid_project",
            details=[{"path": "project", "message": "invalid project id"}],
        )
    return project_id


def validate_scopes(scopes: list[str]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValidationFailed(
            f"scopes must be a non-empty subset of {', '.join(SCOPES)}; unknown: {', '.join(unknown)}",
            code="invalid_scopes",
            details=[{"path": "scopes", "message": "unknown scope"}],
        )
    return tuple(s for s in SCOPES if s in scopes)


class KeyRegistry(Protocol):
    """Where keys live: :class:`KeyStore` (one replica) or
    :class:`avila.shared.keys.RedisKeyStore` (replicas sharing ``AVILA_REDIS_URL``)."""

    def create(self, project_id: str, scopes: list[str], name: str = "") -> tuple[str, KeyInfo]: ...

    def list(self, project_id: str | None = None) -> list[KeyInfo]: ...

    def revoke(self, key_id: str, project_id: str | None = None) -> bool: ...

    def resolve(self, key: str) -> Principal | None: ...


def new_key(project_id: str, scopes: list[str], name: str) -> tuple[str, KeyInfo]:
    """A validated new key: its secret (shown once) and its record."""
    project_id = validate_project(project_id)
    ordered = validate_scopes(scopes)
    secret = "ak_" + secrets.token_urlsafe(32)
    info = KeyInfo(
        key_id="key_" + secrets.token_hex(6),
        project_id=project_id,
        scopes=ordered,
        name=name,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        revoked_at=None,
    )
    return secret, info


def bootstrap_principals(bootstrap_keys: tuple[str, ...]) -> dict[str, Principal]:
    """``API_KEYS``: every scope on project ``default``, by key hash."""
    return {
        hash_key(k): Principal(f"env:{i}", DEFAULT_PROJECT, frozenset(SCOPES))
        for i, k in enumerate(bootstrap_keys)
    }


class KeyStore:
    """Keys file (SQLite) plus the bootstrap keys from ``API_KEYS``."""

    def __init__(self, path: Path, bootstrap_keys: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._bootstrap = bootstrap_principals(bootstrap_keys)
        self._lock = threading.Lock()
        self._cache: dict[str, Principal] = {}
        self._cache_stamp: tuple[float, int] | None = None
        self._checked_at = float("-inf")
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, key_hash TEXT UNIQUE,"
                " project_id TEXT NOT NULL, scopes TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',"
                " created_at TEXT NOT NULL, revoked_at TEXT)"
            )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def create(self, project_id: str, scopes: list[str], name: str = "") -> tuple[str, KeyInfo]:
        """Create a key; returns the secret (shown once) and its record."""
        secret, info = new_key(project_id, scopes, name)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (
                    info.key_id,
                    hash_key(secret),
                    info.project_id,
                    ",".join(info.scopes),
                    name,
                    info.created_at,
                ),
            )
        return secret, info

    def list(self, project_id: str | None = None) -> list[KeyInfo]:
        """Every stored key, or only ``project_id``'s."""
        sql = "SELECT key_id, project_id, scopes, name, created_at, revoked_at FROM api_keys"
        params: tuple[str, ...] = ()
        if project_id is not None:
            sql, params = sql + " WHERE project_id = ?", (project_id,)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, key_id", params).fetchall()
        return [KeyInfo(r[0], r[1], tuple(r[2].split(",")), r[3], r[4], r[5]) for r in rows]

    def revoke(self, key_id: str, project_id: str | None = None) -> bool:
        """Revoke an active key (only if it belongs to ``project_id``, when given), in one
        statement; False if there was no such active key."""
        sql = "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL"
        params: tuple[str, ...] = (datetime.now(UTC).isoformat(timespec="seconds"), key_id)
        if project_id is not None:
            sql, params = sql + " AND project_id = ?", (*params, project_id)
        with self._connect() as conn:
            revoked = conn.execute(sql, params).rowcount > 0
        with self._lock:
            self._checked_at = float("-inf")  # the next request reads the file again
        return revoked

    def _file_stamp(self) -> tuple[float, int]:
        stamps = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(f"{self.path}{suffix}")
                stamps.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                stamps.append((0, 0))
        return (float(stamps[0][0] + stamps[1][0]), stamps[0][1] + stamps[1][1])

    def _reload_if_changed(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._cache_stamp:
            return
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key_id, key_hash, project_id, scopes FROM api_keys WHERE revoked_at IS NULL"
            ).fetchall()
        self._cache = {r[1]: Principal(r[0], r[2], frozenset(r[3].split(","))) for r in rows}
        self._cache_stamp = stamp

    def resolve(self, key: str) -> Principal | None:
        """The principal of ``key``, or None for an unknown or revoked key."""
        digest = hash_key(key)
        found = self._bootstrap.get(digest)
        if found is not None:
            return found
        now = time.monotonic()
        with self._lock:
            found = self._cache.get(digest)
            if found is None or now - self._checked_at >= KEY_RECHECK_S:
                self._reload_if_changed()
                self._checked_at = now
                found = self._cache.get(digest)
            return found
