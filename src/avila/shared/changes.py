"""Change counters: how a replica learns that another one changed something it caches.

Some state lives in the (shared) store but is cached in memory, such as alarm rules. The
replica that changes it bumps a named counter; the others compare the counter once a second and
reload from the store when it moved, off the event loop (a thread of their own or
``asyncio.to_thread``): both calls block. In process (:class:`LocalChanges`) nobody
else changes anything, so nothing is ever reloaded: exactly the single-replica behaviour.

A counter that Redis lost (a restart without persistence, a failover to a replica that had not
seen it) starts again at a random number, not at 0: counting up from 0 again would bring it back
to a version the replicas already saw, and the first changes after the loss would go unnoticed.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import redis

log = logging.getLogger("avila.shared")

PREFIX = "avila:changes:"
#: A new counter starts below this (random): far from any version seen before it was lost.
_START_BELOW = 1 << 48


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
        from redis import RedisError  # only a replica that shares state loads the client

        self._failure: type[Exception] = RedisError
        self._redis = client

    def bump(self, name: str) -> None:
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(PREFIX + name, secrets.randbelow(_START_BELOW), nx=True)
            pipe.incr(PREFIX + name)
            pipe.execute()
        except self._failure as exc:
            # The change is stored; the other replicas see it after their restart.
            log.warning("change not announced", extra={"counter": name, "error": str(exc)})

    def version(self, name: str) -> int | None:
        try:
            raw = self._redis.get(PREFIX + name)
        except self._failure:
            return None
        return int(raw) if isinstance(raw, bytes) else 0
