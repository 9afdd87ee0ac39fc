"""Per-project activity seen on the live stream: events per second and active users.

Fed by the ingestion listener (cheap: O(1) per batch plus a C-level set update of its user
ids), read once a second by the metrics publisher. Counts start when the server starts; they
describe accepted events by server receive time, not the clients' timestamps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Width of one active-user bucket, in seconds.
USER_BUCKET_SECONDS = 15
#: "Active users" are distinct users seen in (about) this many seconds.
ACTIVE_WINDOW_SECONDS = 300
_USER_BUCKETS = ACTIVE_WINDOW_SECONDS // USER_BUCKET_SECONDS
_SECONDS_KEPT = 60


@dataclass
class _Project:
    total: int = 0
    last_second: int = 0
    seconds: deque[list[int]] = field(default_factory=deque)  # [second, events]
    users: deque[tuple[int, set[str]]] = field(default_factory=deque)  # (bucket, user ids)
    union_key: tuple[int, ...] = ()
    union: set[str] = field(default_factory=set)


class ActivityTracker:
    """Sliding per-project counters; ``clock`` returns seconds (monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._projects: dict[str, _Project] = {}

    def record(self, project_id: str, user_ids: Iterable[str], count: int) -> None:
        """Count ``count`` accepted events of ``project_id`` by ``user_ids``, now."""
        now = int(self._clock())
        state = self._projects.get(project_id)
        if state is None:
            state = self._projects[project_id] = _Project()
        state.total += count
        state.last_second = now
        seconds = state.seconds
        if seconds and seconds[-1][0] == now:
            seconds[-1][1] += count
        else:
            seconds.append([now, count])
            while seconds[0][0] < now - _SECONDS_KEPT:
                seconds.popleft()
        bucket = now // USER_BUCKET_SECONDS
        users = state.users
        if users and users[-1][0] == bucket:
            users[-1][1].update(user_ids)
        else:
            users.append((bucket, set(user_ids)))
            while users[0][0] <= bucket - _USER_BUCKETS:
                users.popleft()

    def snapshot(self, project_id: str) -> dict[str, Any]:
        """``events_last_second`` (the last complete second), ``events_per_second`` (mean of
        the last 10 complete seconds), ``events_last_minute`` and ``active_users`` (distinct
        users in the last ~5 minutes, at 15 s granularity)."""
        now = int(self._clock())
        state = self._projects.get(project_id)
        if state is None:
            return {
                "events_last_second": 0,
                "events_per_second": 0.0,
                "events_last_minute": 0,
                "active_users": 0,
            }
        last = ten = minute = 0
        for second, count in state.seconds:
            age = now - second
            if 1 <= age <= _SECONDS_KEPT:
                minute += count
                if age <= 10:
                    ten += count
                if age == 1:
                    last = count
        return {
            "events_last_second": last,
            "events_per_second": ten / 10.0,
            "events_last_minute": minute,
            "active_users": self._active_users(state, now // USER_BUCKET_SECONDS),
        }

    @staticmethod
    def _active_users(state: _Project, bucket: int) -> int:
        live = [(b, s) for b, s in state.users if b > bucket - _USER_BUCKETS]
        if not live:
            return 0
        current = live[-1][1] if live[-1][0] == bucket else set()
        older = live[:-1] if live[-1][0] == bucket else live
        # The union of the closed buckets changes every 15 s; recompute it only then.
        key = tuple(b for b, _ in older)
        if key != state.union_key:
            state.union = set().union(*(s for _, s in older))
            state.union_key = key
        return len(state.union) + len(current - state.union)

    def prune(self) -> None:
        """Forget projects with no event in the active window."""
        cutoff = int(self._clock()) - ACTIVE_WINDOW_SECONDS
        for project_id in [p for p, s in self._projects.items() if s.last_second < cutoff]:
            del self._projects[project_id]

    def __len__(self) -> int:
        return len(self._projects)
