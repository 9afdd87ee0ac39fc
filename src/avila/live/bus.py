"""In-process publish/subscribe, per project and channel, that never blocks a publisher.

Each subscription owns a bounded queue. When a subscriber falls behind, the oldest messages are
dropped and counted, so a slow or stuck client costs memory bounded by ``maxsize`` and never
slows ingestion. With ``AVILA_REDIS_URL`` set, :class:`avila.shared.live.RedisLiveBus` extends it to reach
other replicas through Redis pub/sub behind the same methods.

A whole batch can be offered at once (:meth:`LiveBus.publish_many`): the queue keeps a reference
to the batch and a ``[start, stop)`` window into it, so offering 10,000 accepted events costs
O(1) per subscriber, and items (for instance event payloads) are only built when a subscriber
actually takes them. Capacity and drops still count single messages.

WebSocket connections do not take single messages from a :class:`Subscription`: they hang off
an attached frame sink (:class:`avila.live.fanout.Fanout`, attached by ``api/ws.py``) that
batches events, encodes each frame once for all its subscribers and samples busy projects.
``publish``/``publish_many`` reach both kinds of subscriber.

The bus belongs to the event loop: call it from the loop's thread (from another thread, use
``loop.call_soon_threadsafe(bus.publish, ...)``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any, Protocol

CHANNELS = ("events", "metrics", "alerts")
#: Key of the shared bus in ``AppContext.state`` / ``app.state``.
STATE_KEY = "live_bus"


class FrameSink(Protocol):
    """What the bus forwards to besides its in-process subscriptions."""

    def publish_many(self, project_id: str, channel: str, items: Sequence[Any]) -> int: ...

    def has_subscribers(self, project_id: str, channel: str) -> bool: ...

    def projects(self, channel: str) -> set[str]: ...


class _Entry:
    """``items[start:stop]`` of one channel, waiting in a subscription's queue."""

    __slots__ = ("channel", "items", "start", "stop")

    def __init__(self, channel: str, items: Sequence[Any], start: int, stop: int) -> None:
        self.channel = channel
        self.items = items
        self.start = start
        self.stop = stop


class Subscription:
    """One subscriber's bounded queue. ``channels`` is maintained by the :class:`LiveBus`."""

    def __init__(self, project_id: str, channels: Iterable[str] = (), maxsize: int = 1000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.project_id = project_id
        self.channels: frozenset[str] = frozenset(channels)
        self.maxsize = maxsize
        #: Messages dropped (oldest first) because the subscriber fell behind, since creation.
        self.dropped = 0
        self._queue: deque[_Entry] = deque()
        self._size = 0
        self._ready = asyncio.Event()

    def offer(self, channel: str, payload: Any) -> None:
        """Queue one message; drop the oldest when full. Never blocks."""
        self.offer_many(channel, (payload,))

    def offer_many(self, channel: str, items: Sequence[Any]) -> None:
        """Queue every item of ``items`` (kept by reference, not copied); O(1) plus drops."""
        count = len(items)
        if not count:
            return
        self._queue.append(_Entry(channel, items, 0, count))
        self._size += count
        excess = self._size - self.maxsize
        while excess > 0:
            oldest = self._queue[0]
            held = oldest.stop - oldest.start
            if held <= excess:
                self._queue.popleft()
                taken = held
            else:
                oldest.start += excess
                taken = excess
            self._size -= taken
            self.dropped += taken
            excess -= taken
        self._ready.set()

    def get_nowait(self) -> tuple[str, Any] | None:
        """The next ``(channel, item)``, or None when nothing is queued."""
        if not self._queue:
            return None
        entry = self._queue[0]
        item = entry.items[entry.start]
        entry.start += 1
        if entry.start >= entry.stop:
            self._queue.popleft()
        self._size -= 1
        return entry.channel, item

    async def get(self) -> tuple[str, Any]:
        """The next ``(channel, item)``; waits when none is queued."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        message = self.get_nowait()
        assert message is not None
        return message

    def pending(self) -> int:
        """Messages queued and not yet taken."""
        return self._size

    def clear(self) -> None:
        """Forget queued messages (not counted as dropped)."""
        self._queue.clear()
        self._size = 0

    def forget(self, channels: Iterable[str]) -> None:
        """Forget queued messages of ``channels`` (after an unsubscribe; not counted as dropped)."""
        gone = set(channels)
        if not gone:
            return
        kept = deque(e for e in self._queue if e.channel not in gone)
        self._queue = kept
        self._size = sum(e.stop - e.start for e in kept)


class LiveBus:
    """Subscriptions indexed by ``(project_id, channel)``: publishing to a project nobody
    listens to is one dict lookup."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._index: dict[tuple[str, str], set[Subscription]] = {}
        self._dropped_closed = 0
        self._sinks: list[FrameSink] = []

    def start(self) -> None:
        """Start background work: none in process (the Redis bus listens to other replicas)."""

    async def stop(self) -> None:
        """Stop background work started by :meth:`start`."""

    def attach(self, sink: FrameSink) -> None:
        """Forward every publish to ``sink`` too (the WebSocket fan-out)."""
        self._sinks.append(sink)

    def subscribe(
        self, project_id: str, channels: Iterable[str] = (), maxsize: int = 1000
    ) -> Subscription:
        sub = Subscription(project_id, (), maxsize=maxsize)
        self._subscriptions.add(sub)
        self.set_channels(sub, channels)
        return sub

    def set_channels(self, sub: Subscription, channels: Iterable[str]) -> None:
        """Make ``sub`` receive exactly ``channels`` from now on."""
        wanted = frozenset(channels)
        removed = sub.channels - wanted
        sub.forget(removed)
        for channel in removed:
            key = (sub.project_id, channel)
            members = self._index.get(key)
            if members is not None:
                members.discard(sub)
                if not members:
                    del self._index[key]
        for channel in wanted - sub.channels:
            self._index.setdefault((sub.project_id, channel), set()).add(sub)
        sub.channels = wanted

    def unsubscribe(self, sub: Subscription) -> None:
        self.set_channels(sub, ())
        if sub in self._subscriptions:
            self._subscriptions.discard(sub)
            self._dropped_closed += sub.dropped

    def dropped_total(self) -> int:
        """Messages dropped for slow subscribers since the bus was created."""
        return self._dropped_closed + sum(s.dropped for s in self._subscriptions)

    def publish(self, project_id: str, channel: str, payload: Any) -> int:
        """Offer ``payload`` to every subscriber of ``project_id`` on ``channel``; returns how
        many subscribers it reached."""
        return self.publish_many(project_id, channel, (payload,))

    def publish_many(self, project_id: str, channel: str, items: Sequence[Any]) -> int:
        """Offer every item of ``items`` (shared by reference between subscribers); returns
        how many subscribers (subscriptions and WebSocket connections) it reached."""
        reached = sum(sink.publish_many(project_id, channel, items) for sink in self._sinks)
        members = self._index.get((project_id, channel))
        if not members:
            return reached
        for sub in members:
            sub.offer_many(channel, items)
        return reached + len(members)

    def has_subscribers(self, project_id: str | None = None, channel: str | None = None) -> bool:
        if project_id is not None and channel is not None:
            return (project_id, channel) in self._index or any(
                sink.has_subscribers(project_id, channel) for sink in self._sinks
            )
        if any(
            (project_id is None or project_id in sink.projects(c))
            for sink in self._sinks
            for c in ((channel,) if channel is not None else CHANNELS)
        ):
            return True
        return any(
            (project_id is None or p == project_id) and (channel is None or c == channel)
            for p, c in self._index
        )

    def projects(self, channel: str) -> set[str]:
        """Projects with at least one subscriber on ``channel``."""
        found = {p for p, c in self._index if c == channel}
        for sink in self._sinks:
            found |= sink.projects(channel)
        return found

    def __len__(self) -> int:
        return len(self._subscriptions)


def get_bus(state: MutableMapping[str, Any]) -> LiveBus:
    """The application's bus, created on first use (``ctx.state`` or ``app.state``).

    Modules that publish (alerts: ``get_bus(ctx.state).publish(project, "alerts", {...})``) and
    the WebSocket endpoint find the same bus this way, whatever their set-up order.
    """
    bus = state.get(STATE_KEY)
    if bus is None:
        bus = state[STATE_KEY] = LiveBus()
    return bus
