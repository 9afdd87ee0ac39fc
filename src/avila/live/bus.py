"""In-process publish/subscribe, per project and channel, that never blocks a publisher.

Each subscription owns a bounded queue. When a subscriber falls behind, the oldest message is
dropped and counted, so a slow or stuck client costs memory bounded by ``maxsize`` and never
slows ingestion. The scale-out tier replaces this with Redis pub/sub behind the same methods.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

CHANNELS = ("events", "metrics", "alerts")


@dataclass(eq=False)
class Subscription:
    project_id: str
    channels: set[str] = field(default_factory=set)
    maxsize: int = 1000
    dropped: int = 0
    _queue: deque[tuple[str, Any]] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, channel: str, payload: Any) -> None:
        """Queue a message; drop the oldest when full. Never blocks."""
        if len(self._queue) >= self.maxsize:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((channel, payload))
        self._ready.set()

    async def get(self) -> tuple[str, Any]:
        """The next ``(channel, payload)``; waits when none is queued."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def pending(self) -> int:
        return len(self._queue)


class LiveBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, project_id: str, channels: Iterable[str] = (), maxsize: int = 1000) -> Subscription:
        sub = Subscription(project_id=project_id, channels=set(channels), maxsize=maxsize)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def publish(self, project_id: str, channel: str, payload: Any) -> int:
        """Offer ``payload`` to every subscriber of ``project_id`` on ``channel``; returns how
        many subscribers it reached."""
        reached = 0
        for sub in self._subscriptions:
            if sub.project_id == project_id and channel in sub.channels:
                sub.offer(channel, payload)
                reached += 1
        return reached

    def has_subscribers(self, project_id: str | None = None, channel: str | None = None) -> bool:
        return any(
            (project_id is None or s.project_id == project_id) and (channel is None or channel in s.channels)
            for s in self._subscriptions
        )

    def __len__(self) -> int:
        return len(self._subscriptions)
