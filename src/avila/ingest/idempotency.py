"""Which (project, event_id) pairs are already stored, for at least the dedup window.

Why in memory: a lookup must cost well under a microsecond on the ingest hot path, and neither
an index in the store nor a scan of recent rows does. The index is rebuilt from the store's
last ``window`` of received events at start, so the guarantee survives restarts and crashes.
Memory is bounded by ``max_keys``; when the bound is hit the oldest keys leave early and
``evicted_early`` counts them (exported as a metric) so an operator can see the window shrink.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping


def event_key(project_id: str, event_id: str) -> str:
    return f"{project_id}\x1f{event_id}"


class DedupIndex:
    """Committed event keys, oldest first, each with the monotonic time it was committed."""

    def __init__(self, window_seconds: float, max_keys: int = 20_000_000) -> None:
        self.window_seconds = window_seconds
        self.max_keys = max_keys
        # A plain dict keeps insertion order and takes a batch of keys in one C call (an
        # OrderedDict costs ~3 % of the server's CPU under batch load); the oldest keys leave
        # in bulk (prune, overflow), never one by one from the front.
        self._committed: dict[str, float] = {}
        self.evicted_early = 0

    def __len__(self) -> int:
        return len(self._committed)

    def __contains__(self, key: str) -> bool:
        return key in self._committed

    @property
    def keys(self) -> Mapping[str, float]:
        """Read-only view for hot loops (``key in index.keys`` skips a method call per event)."""
        return self._committed

    def add_committed(self, keys: Iterable[str], at: float | None = None) -> None:
        stamp = time.monotonic() if at is None else at
        committed = self._committed
        committed.update(zip(keys, itertools.repeat(stamp)))  # one C loop
        overflow = len(committed) - self.max_keys
        if overflow > 0:
            for key in list(itertools.islice(committed, overflow)):
                del committed[key]
            self.evicted_early += overflow

    def prune(self, now: float | None = None) -> int:
        """Forget keys older than the window; returns how many were dropped."""
        cutoff = (time.monotonic() if now is None else now) - self.window_seconds
        committed = self._committed
        stale = []
        for key, stamp in committed.items():
            if stamp >= cutoff:
                break
            stale.append(key)
        for key in stale:
            del committed[key]
        return len(stale)
