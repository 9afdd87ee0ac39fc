"""Per-key rate limits with the `limits` library (sliding window counter: O(1) per hit, in-process storage).

The scale-out tier swaps the storage for Redis (`limits` supports it) so replicas share counters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter


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
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    @property
    def enabled(self) -> bool:
        return self._item is not None

    def hit(self, key_id: str) -> RateDecision | None:
        """Count one request for ``key_id``; None when rate limiting is off."""
        if self._item is None:
            return None
        allowed = self._limiter.hit(self._item, key_id)
        stats = self._limiter.get_window_stats(self._item, key_id)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return RateDecision(allowed, self.per_minute, max(0, stats.remaining), reset)
