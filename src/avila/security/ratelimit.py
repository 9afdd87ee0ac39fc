"""Per-key rate limits: a sliding window counter on the `limits` library's storage, O(1) per hit.

Counters live in process memory, or with ``AVILA_REDIS_URL`` in the `limits` library's Redis
storage, so replicas share them and the budget is per key, not per replica. Redis down: 503
``shared_state_unavailable`` (a limit nobody can count is not silently lifted).

The rule: a request is let through when ``ceil(previous * overlap) + current + 1 <= limit``,
where ``previous`` and ``current`` are the counts of the previous and the current minute-long
window and ``overlap`` the share of the previous window still inside the sliding minute. The
`limits` library's own strategy rounds the weighted previous count *down*, so just after a
window ends one request more than the limit passed (5 a minute: 5 at 12:00:59.9, a 6th at
12:01:00.05, as 5 * 0.999 floors to 4). Rounding up, that cannot happen. The counting is the
library's (``get_sliding_window``, ``incr``: same keys, same values, in memory and in Redis);
only the decision is taken here. (The library's moving window would be exact, but keeps one
entry per request: thousands per key and minute, in memory and in Redis.)

The limiter also carries the failed-authentication counters per client address
(:mod:`avila.security.auth_failures`, in process memory), on and off with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.errors import StorageError
from limits.storage import MemoryStorage

from avila.errors import SharedStateUnavailable
from avila.security.auth_failures import AUTH_FAILURE_LIMIT, AuthFailures

# Float noise (the memory storage's window shares are computed from epoch seconds, Redis's in
# ms / 1000) must not turn an exact 2 requests or 12 s into 2.0000001 and round it up to 3.
_EPSILON = 1e-6


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers


@dataclass(frozen=True)
class _Window:
    """One key's sliding window as the storage reports it, seconds relative to now:
    ``previous`` requests of which the share ``previous_ttl / expiry`` still counts,
    ``current`` requests in a window that ends in ``ends_in``."""

    expiry: int
    previous: int
    previous_ttl: float
    current: int
    ends_in: float

    @property
    def weighted_previous(self) -> int:
        """The previous window's weighted count, rounded up."""
        if self.previous <= 0:
            return 0
        share = self.previous * max(0.0, self.previous_ttl) / self.expiry
        return max(0, math.ceil(share - _EPSILON))

    @property
    def count(self) -> int:
        return self.weighted_previous + self.current

    def with_current(self, current: int) -> _Window:
        return replace(self, current=current)

    def seconds_until(self, target: int) -> float:
        """Seconds until the count is down to ``target`` (>= 0) without further requests."""
        if self.count <= target:
            return 0.0
        if self.current <= target:
            # The previous window's share has to drop to target - current:
            # previous * (previous_ttl - t) / expiry <= target - current.
            return max(
                0.0, self.previous_ttl - (target - self.current) * self.expiry / self.previous
            )
        # The current window must end first; it then counts as the previous one, its share
        # falling from `current` to 0 over the next window.
        return max(0.0, self.ends_in + self.expiry - target * self.expiry / self.current)


class RateLimiter:
    """Per-key limits. With Redis (``storage_url``) the counters are counted with the `limits`
    library's asyncio storage on redis-py (:meth:`hit_async`): a hung Redis holds up the request
    that asked (1 s, then 503), never the event loop and every other request with it, as the
    blocking client did. In process memory a hit is a dictionary update: :meth:`hit`."""

    def __init__(self, per_minute: int, storage_url: str = "") -> None:
        """``storage_url``: a Redis URL (``redis://...``, ``rediss://``, ``unix://``); empty:
        process memory."""
        self.per_minute = per_minute
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        # RATE_LIMIT_PER_MINUTE=0 is documented as "no rate limits": this one included.
        self.auth_failures = AuthFailures(AUTH_FAILURE_LIMIT if per_minute > 0 else 0)
        self._memory = MemoryStorage()
        self._shared: AsyncRedisStorage | None = None
        if storage_url:
            # `limits` spells the asyncio storage async+redis://, a Unix socket
            # async+redis+unix:// (redis-py: unix://).
            if storage_url.startswith("unix://"):
                storage_url = "redis+" + storage_url
            self._shared = AsyncRedisStorage(
                "async+" + storage_url,
                implementation="redispy",
                wrap_exceptions=True,
                socket_timeout=1,
                socket_connect_timeout=1,
            )

    async def aclose(self) -> None:
        """Close the Redis connections of the shared counters, if any (on the event loop that
        used them)."""
        if self._shared is not None:
            client: Any = getattr(self._shared.bridge, "storage", None)  # redis.asyncio.Redis
            if client is not None:
                await client.aclose()

    @property
    def enabled(self) -> bool:
        return self._item is not None

    def hit(self, key_id: str) -> RateDecision | None:
        """Count one request for ``key_id`` in process memory; None when rate limiting is off.
        With Redis, use :meth:`hit_async`."""
        if self._item is None:
            return None
        if self._shared is not None:
            raise RuntimeError("counters in Redis are counted with hit_async")
        key = self._item.key_for(key_id)
        expiry = self._item.get_expiry()
        storage = self._memory
        previous, previous_ttl, current, current_ttl = storage.get_sliding_window(key, expiry)
        # In memory the windows are the clock's minutes; a counter lives two windows, so the
        # current window ends `expiry` before the time to live the storage reports.
        window = _Window(expiry, previous, previous_ttl, current, current_ttl - expiry)
        if window.count + 1 > self.per_minute:
            return self._decision(False, window)
        # The key the storage just read. Taken after the read: should a minute turn in between,
        # this request goes into the new window, which the check above already covered.
        current_key = storage.sliding_window_keys(key, expiry, time.time())[1]
        counted = window.with_current(storage.incr(current_key, 2 * expiry))
        if counted.count > self.per_minute:  # another thread counted in between
            storage.decr(current_key)
            return self._decision(False, counted.with_current(counted.current - 1))
        return self._decision(True, counted)

    async def hit_async(self, key_id: str) -> RateDecision | None:
        """Count one request for ``key_id``; None when rate limiting is off; 503
        ``shared_state_unavailable`` when Redis does not answer (a limit nobody can count is
        not silently lifted)."""
        if self._item is None:
            return None
        storage = self._shared
        if storage is None:
            return self.hit(key_id)
        try:
            return await self._hit_shared(
                storage, self._item.key_for(key_id), self._item.get_expiry()
            )
        except StorageError as exc:
            raise SharedStateUnavailable(
                f"the rate limit store did not answer: {type(exc).__name__}; retry shortly",
                details=[{"service": "redis"}],
            ) from exc

    async def _hit_shared(self, storage: AsyncRedisStorage, key: str, expiry: int) -> RateDecision:
        # The library's script moves an ended window to "previous" first (atomically).
        previous, previous_ttl, current, current_ttl = await storage.get_sliding_window(key, expiry)
        # In Redis a window starts with its first request; its counter lives two windows, so
        # the window ends `expiry` before the counter's time to live runs out.
        window = _Window(expiry, previous, previous_ttl, current, current_ttl - expiry)
        if window.count + 1 > self.per_minute:
            return self._decision(False, window)
        # The library's key of the current window ("{key}"), counted as its own script counts
        # it: INCRBY, and a new (or emptied: 0) counter gets two windows to live from now, so
        # its window starts with this request.
        current_key = storage._current_window_key(key)
        counted = window.with_current(await storage.incr(current_key, 2 * expiry))
        if counted.current == 1:
            counted = _Window(expiry, previous, previous_ttl, 1, float(expiry))
        if counted.count > self.per_minute:
            # Another replica counted in between: give the request back. (The storage has no
            # decr; the counter exists, so an incr by -1 never sets its expiry again.)
            await storage.incr(current_key, 2 * expiry, amount=-1)
            return self._decision(False, counted.with_current(counted.current - 1))
        return self._decision(True, counted)

    def _decision(self, allowed: bool, window: _Window) -> RateDecision:
        """``remaining``: requests the window lets through now; ``reset_seconds``: until one
        more is let through (refused: until the next one is)."""
        count = window.count
        reset = 0
        if count > 0:
            reset = math.ceil(window.seconds_until(min(count, self.per_minute) - 1) - _EPSILON)
        return RateDecision(allowed, self.per_minute, max(0, self.per_minute - count), reset)
