"""Change counters: how a replica learns that another one changed something it caches.

Some state lives in the (shared) store but is cached in memory, such as alarm rules. The
replica that changes it bumps a named counter; the others compare the counter at most once a
second and reload from the store when it moved. In process (:class:`LocalChanges`) nobody
else changes anything, so nothing is ever reloaded: exactly the single-replica behaviour.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis

log = logging.getLogger("avila.shared")

PREFIX = "avila:changes:"


class Changes(Protocol):
    def bump(self, name: str) -> None:
        """Tell the other replicas that ``name`` changed."""
        ...

    def version(self, name: str) -> int | None:
        """The counter of ``name``; None when it cannot be read (keep the cache)."""
        ...


class LocalChanges:
    def bump(self, name: str) -> None:
        return None

    def version(self, name: str) -> int | None:
        return 0


class RedisChanges:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def bump(self, name: str) -> None:
        try:
            self._redis.incr(PREFIX + name)
        except redis.RedisError as exc:
            # The change is stored; the other replicas see it after their restart.
            log.warning("change not announced", extra={"counter": name, "error": str(exc)})

    def version(self, name: str) -> int | None:
        try:
            raw = self._redis.get(PREFIX + name)
        except redis.RedisError:
            return None
        return int(raw) if isinstance(raw, bytes) else 0
