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

from limits import RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string
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
    def __init__(self, per_minute: int, storage_url: str = "") -> None:
        """``storage_url``: a `limits` storage URI (``redis://...``); empty: process memory."""
        self.per_minute = per_minute
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        # RATE_LIMIT_PER_MINUTE=0 is documented as "no rate limits": this one included.
        self.auth_failures = AuthFailures(AUTH_FAILURE_LIMIT if per_minute > 0 else 0)
        storage: Storage = MemoryStorage()
        self._redis: RedisStorage | None = None
        if storage_url:
            # A redis:// URI gives the synchronous storage (async:// would be the aio one).
            # `limits` spells a Redis Unix socket redis+unix:// (redis-py: unix://).
            if storage_url.startswith("unix://"):
                storage_url = "redis+" + storage_url
            shared = storage_from_string(
                storage_url, wrap_exceptions=True, socket_timeout=1, socket_connect_timeout=1
            )
            assert isinstance(shared, Storage)
            storage = shared
            if isinstance(shared, RedisStorage):
                self._redis = shared
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    def close(self) -> None:
        """Close the Redis connections of the shared counters, if any (blocking)."""
        if self._redis is not None:
            self._redis.storage.close()

    @property
    def enabled(self) -> bool:
        return self._item is not None

    def hit(self, key_id: str) -> RateDecision | None:
        """Count one request for ``key_id``; None when rate limiting is off."""
        if self._item is None:
            return None
        try:
            allowed = self._limiter.hit(self._item, key_id)
            stats = self._limiter.get_window_stats(self._item, key_id)
        except StorageError as exc:
            raise SharedStateUnavailable(
                f"the rate limit store did not answer: {type(exc).__name__}; retry shortly",
                details=[{"service": "redis"}],
            ) from exc
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return RateDecision(allowed, self.per_minute, max(0, stats.remaining), reset)
