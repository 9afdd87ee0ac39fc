"""Fan-out of the live bus to WebSocket connections: batched, encoded once, bounded.

Accepted events are not sent when they arrive. The ingest listener only appends a reference to
the batch (O(1)); every ``flush_seconds`` the flusher turns each project's pending events into
one frame per *stream* (the project's unfiltered ``events`` stream, plus one per distinct
filter), encoded once, sampled above ``max_events_per_second``, and appends the same frame
object to the :class:`Outbox` of every member. ``metrics`` and ``alerts`` messages are encoded
once per publish and queued the same way.

Each connection's outbox holds at most ``queue_frames`` frames; when a client reads too slowly
the oldest events frames are dropped and counted, and the next events frame tells the client
how many events it missed. Nothing here ever waits on a client: the WebSocket sender task of
each connection is the only thing that does.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from avila.live.filters import EventFilter
from avila.live.frames import Frame, events_frame, message_frame
from avila.live.sampling import TokenBucket, uniform_positions

log = logging.getLogger("avila.live")


@dataclass(frozen=True)
class LiveLimits:
    """The live stream's settings (``AVILA_LIVE_*``)."""

    flush_seconds: float = 0.2
    max_events_per_second: int = 1000
    queue_frames: int = 16
    stall_timeout_seconds: float = 30.0
    max_connections_per_project: int = 500
    max_connections_per_key: int = 100


class TooManyConnections(Exception):
    """A connection over a cap; ``scope`` is ``"project"`` or ``"key"``."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"too many live connections for this {scope} (at most {limit})")
        self.scope = scope
        self.limit = limit


@dataclass
class ProjectStats:
    """Counters of one project, exported to Prometheus."""

    connections: int = 0
    frames: int = 0
    bytes: int = 0
    dropped_events: int = 0
    sampled_out_events: int = 0
    closed: Counter[str] = field(default_factory=Counter)


class Outbox:
    """One connection's bounded queue of shared frames and what it has lost."""

    def __init__(self, project_id: str, key_id: str, maxsize: int) -> None:
        self.project_id = project_id
        self.key_id = key_id
        self.maxsize = maxsize
        self.channels: frozenset[str] = frozenset()
        self.filter: EventFilter | None = None
        #: Events lost so far (dropped from the queue, or unsent at a stall).
        self.lost_events = 0
        #: Metrics/Alert messages lost so far.
        self.lost_messages = 0
        self._lost_events_unreported = 0
        self._frames: deque[Frame] = deque()
        self._ready = asyncio.Event()

    def put(self, frame: Frame) -> int:
        """Queue ``frame``; when over ``maxsize``, drop the oldest events frame (else the
        oldest frame). Returns the events dropped. Never blocks."""
        frames = self._frames
        frames.append(frame)
        dropped = 0
        while len(frames) > self.maxsize:
            victim = next((f for f in frames if f.events), frames[0])
            frames.remove(victim)
            dropped += self.lose(victim)
        self._ready.set()
        return dropped

    def lose(self, frame: Frame) -> int:
        """Count ``frame`` as lost; returns its events."""
        if frame.events:
            self.lost_events += frame.events
            self._lost_events_unreported += frame.events
        else:
            self.lost_messages += 1
        return frame.events

    def discard(self) -> int:
        """Lose everything queued (the connection is closing); returns the events."""
        events = sum(self.lose(f) for f in self._frames)
        self._frames.clear()
        return events

    def take_nowait(self) -> tuple[Frame, str] | None:
        """The next frame and its text for this connection, or None."""
        if not self._frames:
            return None
        frame = self._frames.popleft()
        if frame.cumulative:
            dropped = self.lost_events + self.lost_messages
            if frame.events:
                self._lost_events_unreported = 0
        else:
            dropped, self._lost_events_unreported = self._lost_events_unreported, 0
        return frame, frame.text(dropped)

    async def take(self) -> tuple[Frame, str]:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        taken = self.take_nowait()
        assert taken is not None
        return taken

    def pending(self) -> int:
        return len(self._frames)


class _Stream:
    """Subscribers of one project's events with one filter: one frame per flush for all."""

    __slots__ = ("bucket", "filter", "members")

    def __init__(self, event_filter: EventFilter | None, rate: float, now: float) -> None:
        self.filter = event_filter
        self.bucket = TokenBucket(rate, now)
        self.members: set[Outbox] = set()


def _columns(view: Sequence[Any]) -> dict[str, list[Any]] | None:
    return getattr(view, "columns", None)


class Fanout:
    """The WebSocket side of the live bus (see the module doc)."""

    def __init__(
        self,
        limits: LiveLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.limits = limits or LiveLimits()
        self._clock = clock
        self._rng = rng or random.Random()
        self._outboxes: set[Outbox] = set()
        self._channel_members: dict[tuple[str, str], set[Outbox]] = {}
        self._streams: dict[str, dict[EventFilter | None, _Stream]] = {}
        self._pending: dict[str, list[Sequence[Any]]] = {}
        self._per_key: Counter[str] = Counter()
        self.stats: dict[str, ProjectStats] = {}
        self._task: asyncio.Task[None] | None = None

    # -- connections -------------------------------------------------------------------------

    def connect(self, project_id: str, key_id: str) -> Outbox:
        """A new connection's outbox; raises :class:`TooManyConnections` over a cap."""
        stats = self._stats(project_id)
        limits = self.limits
        if stats.connections >= limits.max_connections_per_project:
            stats.closed["too_many_connections"] += 1
            raise TooManyConnections("project", limits.max_connections_per_project)
        if self._per_key[key_id] >= limits.max_connections_per_key:
            stats.closed["too_many_connections"] += 1
            raise TooManyConnections("key", limits.max_connections_per_key)
        outbox = Outbox(project_id, key_id, limits.queue_frames)
        self._outboxes.add(outbox)
        stats.connections += 1
        self._per_key[key_id] += 1
        return outbox

    def disconnect(self, outbox: Outbox, reason: str | None = None) -> None:
        """Forget ``outbox`` (idempotent); its queued frames count as dropped."""
        if outbox not in self._outboxes:
            return
        self.set_channels(outbox, ())
        self._outboxes.discard(outbox)
        stats = self._stats(outbox.project_id)
        stats.dropped_events += outbox.discard()
        stats.connections -= 1
        if reason:
            stats.closed[reason] += 1
        self._per_key[outbox.key_id] -= 1
        if self._per_key[outbox.key_id] <= 0:
            del self._per_key[outbox.key_id]

    def set_channels(
        self, outbox: Outbox, channels: Iterable[str], event_filter: EventFilter | None = None
    ) -> None:
        """Make ``outbox`` receive exactly ``channels`` (``events`` through ``event_filter``)."""
        project = outbox.project_id
        wanted = frozenset(channels)
        same_stream = (
            "events" in outbox.channels and "events" in wanted and outbox.filter == event_filter
        )
        if "events" in outbox.channels and not same_stream:
            streams = self._streams[project]
            stream = streams[outbox.filter]
            stream.members.discard(outbox)
            if not stream.members:
                del streams[outbox.filter]
                if not streams:
                    del self._streams[project]
                    self._pending.pop(project, None)
        for channel in outbox.channels - wanted - {"events"}:
            members = self._channel_members[(project, channel)]
            members.discard(outbox)
            if not members:
                del self._channel_members[(project, channel)]
        for channel in wanted - outbox.channels - {"events"}:
            self._channel_members.setdefault((project, channel), set()).add(outbox)
        outbox.filter = event_filter if "events" in wanted else None
        if "events" in wanted and not same_stream:
            streams = self._streams.setdefault(project, {})
            joined = streams.get(event_filter)
            if joined is None:
                rate = self.limits.max_events_per_second
                joined = streams[event_filter] = _Stream(event_filter, rate, self._clock())
            joined.members.add(outbox)
        outbox.channels = wanted

    def sent(self, outbox: Outbox, text: str, frame: Frame) -> None:
        """Count a frame the connection's sender wrote."""
        stats = self._stats(outbox.project_id)
        stats.frames += 1
        stats.bytes += frame.nbytes + (len(text) - len(frame.shared))

    def __len__(self) -> int:
        return len(self._outboxes)

    # -- publishing (never blocks) -----------------------------------------------------------

    def has_subscribers(self, project_id: str, channel: str) -> bool:
        if channel == "events":
            return project_id in self._streams
        return (project_id, channel) in self._channel_members

    def projects(self, channel: str) -> set[str]:
        if channel == "events":
            return set(self._streams)
        return {p for p, c in self._channel_members if c == channel}

    def publish(self, project_id: str, channel: str, payload: Any) -> int:
        return self.publish_many(project_id, channel, (payload,))

    def publish_many(self, project_id: str, channel: str, items: Sequence[Any]) -> int:
        """Events wait for the next flush (a reference, O(1)); other channels' messages are
        encoded once each and queued now. Returns the connections reached."""
        if channel == "events":
            streams = self._streams.get(project_id)
            if not streams or not items:
                return 0
            self._pending.setdefault(project_id, []).append(items)
            return sum(len(s.members) for s in streams.values())
        members = self._channel_members.get((project_id, channel))
        if not members:
            return 0
        stats = self._stats(project_id)
        for item in items:
            frame = message_frame(channel, item)
            for outbox in members:
                stats.dropped_events += outbox.put(frame)
        return len(members)

    # -- flushing ----------------------------------------------------------------------------

    def flush(self) -> int:
        """Turn pending events into frames for every stream; returns the frames made."""
        pending, self._pending = self._pending, {}
        now = self._clock()
        made = 0
        for project_id, views in pending.items():
            streams = self._streams.get(project_id)
            if not streams:
                continue
            stats = self._stats(project_id)
            for stream in list(streams.values()):
                frame = self._frame(stream, views, now, stats)
                if frame is None:
                    continue
                made += 1
                for outbox in stream.members:
                    stats.dropped_events += outbox.put(frame)
        return made

    def _frame(
        self, stream: _Stream, views: list[Sequence[Any]], now: float, stats: ProjectStats
    ) -> Frame | None:
        # (view, positions in view) of the events this stream offers.
        offered_parts: list[tuple[Sequence[Any], list[int] | None]]
        if stream.filter is None:
            offered_parts = [(v, None) for v in views]
            sizes = [len(v) for v in views]
        else:
            offered_parts = []
            sizes = []
            for view in views:
                columns = _columns(view)
                if columns is None:
                    continue  # plain payloads (not from ingest) reach unfiltered streams only
                positions = stream.filter.positions(columns)
                if positions:
                    offered_parts.append((view, positions))
                    sizes.append(len(positions))
        offered = sum(sizes)
        if not offered:
            return None
        kept = stream.bucket.take(offered, now)
        stats.sampled_out_events += offered - kept
        starts = [0]
        for size in sizes:
            starts.append(starts[-1] + size)
        events: list[Any] = []
        for flat in uniform_positions(offered, kept, self._rng.sample):
            part = bisect.bisect_right(starts, flat) - 1
            view, matched = offered_parts[part]
            offset = flat - starts[part]
            events.append(view[offset if matched is None else matched[offset]])
        return events_frame(events, kept / offered)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="live-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        # A fixed schedule (not "sleep after each flush"), so loop lag does not add up.
        loop = asyncio.get_running_loop()
        interval = self.limits.flush_seconds
        due = loop.time()
        while True:
            due += interval
            now = loop.time()
            if due < now:  # fell behind by more than a period: skip, do not burst
                due = now
            await asyncio.sleep(due - now)
            try:
                self.flush()
            except Exception:  # one bad flush must not end the live stream for good
                log.exception("live flush failed")

    def _stats(self, project_id: str) -> ProjectStats:
        stats = self.stats.get(project_id)
        if stats is None:
            stats = self.stats[project_id] = ProjectStats()
        return stats
