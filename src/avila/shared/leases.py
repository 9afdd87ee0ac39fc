"""Leases: work that one replica of many should do once per period, such as sending an alert.

Every replica evaluates every alert rule (each has the rules and the shared store), so without
coordination each would deliver the same alert. The replica that finds a rule firing first
takes the rule's lease for its cooldown (``SET avila:lease:<name> <replica> NX PX``); the others
find it taken and stay quiet until it expires. The holder may take its lease again (for
``seconds`` from then), in one script with the check, so a lease that expired and was taken by
another replica is never renewed by the old holder. In process (:class:`LocalLeases`) there is
no one else: every lease is granted, exactly the single-replica behaviour.

Redis down: the lease is granted (and a warning logged). A replica that cannot reach Redis may
then send an alert another replica sent too; a duplicate alert is the lesser harm than none.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import redis

log = logging.getLogger("avila.shared")

PREFIX = "avila:lease:"

# Free, or held by us (ARGV[1]): ours for ARGV[2] ms from now; held by another: refused.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class Leases(Protocol):
    def acquire(self, name: str, seconds: float) -> bool:
        """True if this replica now holds ``name`` for ``seconds`` from now (nobody else held
        it; a lease this replica held is taken again)."""
        ...


class LocalLeases:
    def acquire(self, name: str, seconds: float) -> bool:
        return True


class RedisLeases:
    def __init__(self, client: redis.Redis) -> None:
        from redis import RedisError  # only a replica that shares state loads the client

        self._failure: type[Exception] = RedisError
        self._redis = client
        self._holder = secrets.token_hex(8)
        self._acquire = client.register_script(_ACQUIRE)

    def acquire(self, name: str, seconds: float) -> bool:
        milliseconds = max(1, round(seconds * 1000))
        try:
            return bool(self._acquire(keys=[PREFIX + name], args=[self._holder, milliseconds]))
        except self._failure as exc:
            log.warning("lease granted without Redis", extra={"lease": name, "error": str(exc)})
            return True
