"""Per-key rate limits with the `limits` library (sliding window counter: O(1) per hit).

Counters live in process memory, or with ``AVILA_REDIS_URL`` in the `limits` library's Redis
storage, so replicas share them and the budget is per key, not per replica. Redis down: 503
``shared_state_unavailable`` (a limit nobody can count is not silently lifted).

The limiter also carries the failed-authentication counters per client address
(:mod:`avila.security.auth_failures`, in process memory), on and off with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import (
    SlidingWindowCounterRateLimiter as AsyncSlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from avila.errors import SharedStateUnavailable
from avila.security.auth_failures import AUTH_FAILURE_LIMIT, AuthFailures


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
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared: AsyncRedisStorage | None = None
        self._shared_limiter: AsyncSlidingWindowCounterRateLimiter | None = None
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
            self._shared_limiter = AsyncSlidingWindowCounterRateLimiter(self._shared)

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
        if self._shared_limiter is not None:
            raise RuntimeError("counters in Redis are counted with hit_async")
        allowed = self._limiter.hit(self._item, key_id)
        stats = self._limiter.get_window_stats(self._item, key_id)
        return self._decision(allowed, stats.reset_time, stats.remaining)

    async def hit_async(self, key_id: str) -> RateDecision | None:
        """Count one request for ``key_id``; None when rate limiting is off; 503
        ``shared_state_unavailable`` when Redis does not answer (a limit nobody can count is
        not silently lifted)."""
        if self._item is None:
            return None
        shared = self._shared_limiter
        if shared is None:
            return self.hit(key_id)
        try:
            allowed = await shared.hit(self._item, key_id)
            stats = await shared.get_window_stats(self._item, key_id)
        except StorageError as exc:
            raise SharedStateUnavailable(
                f"the rate limit store did not answer: {type(exc).__name__}; retry shortly",
                details=[{"service": "redis"}],
            ) from exc
        return self._decision(allowed, stats.reset_time, stats.remaining)

    def _decision(self, allowed: bool, reset_time: float, remaining: int) -> RateDecision:
        reset = max(0, math.ceil(reset_time - time.time()))
        return RateDecision(allowed, self.per_minute, max(0, remaining), reset)
