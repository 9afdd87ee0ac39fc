"""API keys in Redis, for replicas that share ``AVILA_REDIS_URL`` (same interface as
:class:`avila.security.keys.KeyStore`).

Layout: hash ``avila:keys`` maps key id -> JSON record (with the key's SHA-256, never the key);
``avila:keys:version`` counts changes. Each replica keeps the active keys in memory and asks
Redis for the version at most every :data:`RECHECK_SECONDS`; a changed version reloads the
records. So a revoke on any replica (or ``avila keys revoke``) is refused everywhere within
that interval, and a request costs no Redis round trip in between.

Redis down: a replica whose cache is due for a check answers 503 ``shared_state_unavailable``
rather than trust a list that may miss a revocation.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis

from avila.errors import SharedStateUnavailable
from avila.security.keys import KeyInfo, Principal, bootstrap_principals, hash_key, new_key

RECORDS = "avila:keys"
VERSION = "avila:keys:version"
#: How stale the in-memory key list may get; the revocation guarantee is "within 1 s".
RECHECK_SECONDS = 0.5
#: An unknown key re-checks sooner, so a key created on another replica works at once; the
#: bound keeps a flood of bad keys to at most 20 version reads a second.
MISS_RECHECK_SECONDS = 0.05

# Revoke in one atomic step: only an active key, only of the given project (when given).
_REVOKE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local record = cjson.decode(raw)
if record['revoked_at'] ~= cjson.null then return 0 end
if ARGV[3] ~= '' and record['project_id'] ~= ARGV[3] then return 0 end
record['revoked_at'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(record))
redis.call('INCR', KEYS[2])
return 1
"""


class _Record(msgspec.Struct):
    key_id: str
    key_hash: str
    project_id: str
    scopes: list[str]
    name: str
    created_at: str
    revoked_at: str | None = None

    def info(self) -> KeyInfo:
        return KeyInfo(
            self.key_id,
            self.project_id,
            tuple(self.scopes),
            self.name,
            self.created_at,
            self.revoked_at,
        )


_decode = msgspec.json.Decoder(_Record).decode


def unavailable(exc: Exception) -> SharedStateUnavailable:
    return SharedStateUnavailable(
        f"the shared state (Redis) did not answer: {type(exc).__name__}; retry shortly",
        details=[{"service": "redis"}],
    )


class RedisKeyStore:
    """Keys in Redis plus the bootstrap keys from ``API_KEYS``."""

    def __init__(self, client: redis.Redis, bootstrap_keys: tuple[str, ...] = ()) -> None:
        self._redis = client
        self._bootstrap = bootstrap_principals(bootstrap_keys)
        self._revoke = client.register_script(_REVOKE)
        self._lock = threading.Lock()
        self._active: dict[str, Principal] = {}
        self._version: Any = object()
        self._checked_at = float("-inf")

    def create(self, project_id: str, scopes: list[str], name: str = "") -> tuple[str, KeyInfo]:
        secret, info = new_key(project_id, scopes, name)
        record = _Record(
            info.key_id,
            hash_key(secret),
            info.project_id,
            list(info.scopes),
            name,
            info.created_at,
        )
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(RECORDS, info.key_id, msgspec.json.encode(record))
                pipe.incr(VERSION)
                created, _ = pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        if not created:  # 48 random bits collided: vanishingly rare, so simply try again
            return self.create(project_id, scopes, name)
        return secret, info

    def _records(self) -> list[_Record]:
        try:
            raw = self._redis.hvals(RECORDS)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return [_decode(r) for r in raw]

    def list(self, project_id: str | None = None) -> list[KeyInfo]:
        records = [r for r in self._records() if project_id is None or r.project_id == project_id]
        records.sort(key=lambda r: (r.created_at, r.key_id))
        return [r.info() for r in records]

    def revoke(self, key_id: str, project_id: str | None = None) -> bool:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            done = self._revoke(keys=[RECORDS, VERSION], args=[key_id, stamp, project_id or ""])
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        if done:
            self._checked_at = float("-inf")  # this replica sees its own revoke at once
        return bool(done)

    def _refresh(self, max_age: float) -> None:
        now = time.monotonic()
        if now - self._checked_at < max_age:
            return
        try:
            version = self._redis.get(VERSION)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        if version != self._version:
            self._active = {
                r.key_hash: Principal(r.key_id, r.project_id, frozenset(r.scopes))
                for r in self._records()
                if r.revoked_at is None
            }
            self._version = version
        self._checked_at = now

    def resolve(self, key: str) -> Principal | None:
        digest = hash_key(key)
        found = self._bootstrap.get(digest)
        if found is not None:
            return found
        with self._lock:
            self._refresh(RECHECK_SECONDS)
            found = self._active.get(digest)
            if found is None:
                self._refresh(MISS_RECHECK_SECONDS)
                found = self._active.get(digest)
            return found
