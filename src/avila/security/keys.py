"""API keys: each belongs to one project and carries scopes; only a hash is stored.

Keys live in a small SQLite file beside the store rather than in DuckDB because DuckDB admits
one writing process per file: ``avila keys create`` must work while ``avila serve`` holds the
event store. The server re-reads the file when it changes, so a revoke takes effect within a
second without a restart.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import secrets
import sqlite3
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from avila.errors import ValidationFailed

SCOPES = ("ingest", "read", "admin")
#: How long a known key's principal is served without looking at the keys file again (two
#: ``stat`` calls, one ``PRAGMA data_version`` and a lock). A revoke by this
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
    unknown = [(i, s) for i, s in enumerate(scopes) if s not in SCOPES]
    if unknown or not scopes:
        named = ", ".join(repr(s) for _, s in unknown)
        raise ValidationFailed(
            f"scopes must be a non-empty subset of {', '.join(SCOPES)}; unknown: {named}",
            code="invalid_scopes",
            details=[
                {"path": f"scopes[{i}]", "message": f"unknown scope {s!r}"} for i, s in unknown
            ]
            or [{"path": "scopes", "message": "at least one scope is needed"}],
        )
    return tuple(s for s in SCOPES if s in scopes)


class KeyRegistry(Protocol):
    """Where keys live: :class:`KeyStore` (one replica) or
    :class:`avila.shared.keys.RedisKeyStore` (replicas sharing ``AVILA_REDIS_URL``)."""

    def create(self, project_id: str, scopes: list[str], name: str = "") -> tuple[str, KeyInfo]: ...

    def list(self, project_id: str | None = None) -> list[KeyInfo]: ...

    def revoke(self, key_id: str, project_id: str | None = None) -> bool: ...

    async def create_async(
        self, project_id: str, scopes: builtins.list[str], name: str = ""
    ) -> tuple[str, KeyInfo]:
        """:meth:`create` for the server's event loop: never waits there for a network."""
        ...

    async def list_async(self, project_id: str | None = None) -> builtins.list[KeyInfo]:
        """:meth:`list` for the server's event loop: never waits there for a network."""
        ...

    async def revoke_async(self, key_id: str, project_id: str | None = None) -> bool:
        """:meth:`revoke` for the server's event loop: never waits there for a network."""
        ...

    def resolve(self, key: str) -> Principal | None:
        """Blocking lookup: for callers outside the event loop (the CLI)."""
        ...

    async def resolve_async(self, key: str) -> Principal | None:
        """The lookup of the server's event loop: never waits there for a network."""
        ...

    def start(self) -> None:
        """Start background work, if any (idempotent)."""
        ...

    def close(self) -> None:
        """Stop background work and close what the registry holds open."""
        ...


#: Bidirectional embeddings, overrides and isolates: they reorder how a line is displayed.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def validate_name(name: str) -> str:
    """A key's label: any text on one line. Control characters (newlines, tabs, NUL, terminal
    escape sequences), line separators and bidi overrides are refused: a project admin chooses
    the name over HTTP and the operator reads it in ``avila keys list``, where a newline forges
    a line of another project's key and an escape sequence drives the operator's terminal."""
    for index, char in enumerate(name):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
            message = (
                f"name must be one line of printable text; character {index} is"
                f" U+{ord(char):04X} ({unicodedata.name(char, 'a control character')})"
            )
            raise ValidationFailed(message, details=[{"path": "name", "message": message}])
    return name


def new_key(project_id: str, scopes: list[str], name: str) -> tuple[str, KeyInfo]:
    """A validated new key: its secret (shown once) and its record."""
    project_id = validate_project(project_id)
    ordered = validate_scopes(scopes)
    name = validate_name(name)
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
    """``API_KEYS``: every scope on project ``default``, by key hash. A key's id comes from the
    key, not its place in the list: replicas whose ``API_KEYS`` are in another order (a rolling
    update) must not charge one key's requests to another's rate budget."""
    by_hash = (hash_key(k) for k in bootstrap_keys)
    return {
        digest: Principal(f"env:{digest[:12]}", DEFAULT_PROJECT, frozenset(SCOPES))
        for digest in by_hash
    }


class KeyStore:
    """Keys file (SQLite) plus the bootstrap keys from ``API_KEYS``."""

    def __init__(self, path: Path, bootstrap_keys: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._bootstrap = bootstrap_principals(bootstrap_keys)
        self._lock = threading.Lock()
        self._cache: dict[str, Principal] = {}
        self._cache_stamp: tuple[int, tuple[tuple[int, int, int], ...]] | None = None
        self._checked_at = float("-inf")
        # Kept open to read ``PRAGMA data_version`` (see _stamp); opened on first use.
        self._watch: sqlite3.Connection | None = None
        self._watch_inode = 0
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
            # The next request reads the file again, whatever its stamp says.
            self._checked_at = float("-inf")
            self._cache_stamp = None
        return revoked

    def _file_stamp(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(f"{self.path}{suffix}")
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def _stamp(self) -> tuple[int, tuple[tuple[int, int, int], ...]]:
        """What changes whenever the keys change. Modification times alone do not: they are
        as coarse as the file system's clock (1 s on ext3 or HFS+, one kernel tick on ext4),
        and after a checkpoint SQLite rewrites its WAL in place, so a revoke landing in the
        same tick as the previous write left inode, size and mtime as they were and the revoked
        key was served until the next change. SQLite's ``data_version``, read on a connection
        kept open, changes with every commit made by any other connection, in this process or
        another. The files' identity is still part of the stamp: a keys file replaced or
        restored from a backup is a new inode (and the watching connection is reopened)."""
        files = self._file_stamp()
        if self._watch is not None and files[0][0] != self._watch_inode:
            self._watch.close()
            self._watch = None
        if self._watch is None:
            self._watch = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
            self._watch_inode = files[0][0]
        row = self._watch.execute("PRAGMA data_version").fetchone()
        return int(row[0]), files

    def _reload_if_changed(self) -> None:
        stamp = self._stamp()  # before reading: a change made meanwhile is seen next time
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

    async def resolve_async(self, key: str) -> Principal | None:
        """:meth:`resolve`: a local file (two ``stat`` calls and a ``PRAGMA`` at most every
        :data:`KEY_RECHECK_S`, more for an unknown key), no network, so on the loop."""
        return self.resolve(key)

    # The keys admin routes: a local file, no network, so on the loop (as resolve_async).

    async def create_async(
        self, project_id: str, scopes: builtins.list[str], name: str = ""
    ) -> tuple[str, KeyInfo]:
        return self.create(project_id, scopes, name)

    async def list_async(self, project_id: str | None = None) -> builtins.list[KeyInfo]:
        return self.list(project_id)

    async def revoke_async(self, key_id: str, project_id: str | None = None) -> bool:
        return self.revoke(key_id, project_id)

    def start(self) -> None:
        """Nothing runs in the background."""

    def close(self) -> None:
        """Close the connection that watches the keys file (reopened if used again)."""
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
