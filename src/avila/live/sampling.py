"""Sampling of a busy live stream: a token bucket decides how many events a flush may carry,
and a uniform sample without replacement picks which.

The bucket fills at ``rate`` events per second up to one second's worth, so a stream at or
below ``rate`` is never sampled (bursts up to a second's worth pass whole) and a stream above it
carries about ``rate`` events per second. Every flush states its own fraction ``kept / offered``.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class TokenBucket:
    """``take(n, now)`` -> how many of ``n`` offered events may go out now (at least 1 when
    ``n`` > 0, so a frame is never empty)."""

    __slots__ = ("_last", "_tokens", "rate")

    def __init__(self, rate: float, now: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._tokens = rate
        self._last = now

    def take(self, offered: int, now: float) -> int:
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if offered <= 0:
            return 0
        kept = offered if offered <= self._tokens else max(1, int(self._tokens))
        self._tokens -= kept
        return kept


def uniform_positions(
    offered: int, kept: int, sample: Callable[[range, int], list[int]] = random.sample
) -> list[int]:
    """``kept`` distinct positions of ``range(offered)``, each equally likely, in order."""
    if kept >= offered:
        return list(range(offered))
    return sorted(sample(range(offered), kept))
