"""The live bus across replicas: Redis pub/sub behind :class:`~avila.live.bus.LiveBus`.

:meth:`RedisLiveBus.publish_many` delivers locally as before and, when some replica has a
subscriber for that project and channel, publishes the batch as one Redis message on
:data:`CHANNEL`. Every replica listens there and delivers other replicas' batches to its own
subscribers (WebSocket connections included), so a WebSocket on replica B sees events
ingested on replica A. Event batches travel as columns and become the same
:class:`~avila.live.feed.EventView` payloads on arrival, so filters and sampling work as for
local events.

Who listens where: each replica keeps its (replica, project, channel) triples with a local
subscriber in the sorted set :data:`INTEREST` (score = expiry time, refreshed every second) and
reads the other replicas' back every :data:`INTEREST_SECONDS`; nobody watching a project means no payloads are built and
nothing is published, as on one replica. The ``metrics`` channel is not relayed: its figures
are each replica's own.

Redis down: each replica's live stream carries its own events only (logged); it resumes by
itself when Redis answers again. Ingestion never waits for the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import redis
import redis.asyncio as aioredis

from avila.ingest.validation import EventRows
from avila.live.bus import LiveBus
from avila.live.feed import EventView

log = logging.getLogger("avila.shared")

CHANNEL = "avila:live"
INTEREST = "avila:live:interest"
RELAYED = ("events", "alerts")
INTEREST_SECONDS = 0.25
_INTEREST_TTL = 5.0
_SEP = "\x1f"
#: Batches waiting for Redis; beyond this the oldest are dropped (the live stream is lossy).
_OUTBOX = 1000
#: Columns an event payload or a stream filter reads (see EventView, avila.live.filters).
_EVENT_COLUMNS = (
    "event_id",
    "user_id",
    "session_id",
    "ts",
    "event_type",
    "data",
    "metadata",
    "context",
)


class _Envelope(msgspec.Struct, array_like=True):
    origin: str
    project: str
    channel: str
    #: ``events``: the batch's columns and its received_at (ISO); others: the items.
    columns: dict[str, list[Any]] | None = None
    received_at: str | None = None
    items: list[Any] | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Envelope).decode


def _envelope(origin: str, project: str, channel: str, items: Sequence[Any]) -> _Envelope:
    columns = getattr(items, "columns", None)
    if isinstance(items, EventView) and columns is not None:
        # EventView keeps received_at as text; carry it so payloads are identical.
        received = items[0]["received_at"] if len(items) else None
        return _Envelope(
            origin,
            project,
            channel,
            columns={name: columns[name] for name in _EVENT_COLUMNS},
            received_at=received,
        )
    return _Envelope(
        origin, project, channel, items=msgspec.json.decode(msgspec.json.encode(list(items)))
    )


def _items(envelope: _Envelope) -> Sequence[Any]:
    if envelope.columns is not None:
        received = envelope.received_at or "1970-01-01T00:00:00Z"
        rows = EventRows(envelope.project, datetime.fromisoformat(received.rstrip("Z")))
        rows.columns = envelope.columns
        return EventView(rows)
    return envelope.items or []


class RedisLiveBus(LiveBus):
    """A :class:`LiveBus` whose publishes reach every replica's subscribers."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__()
        self._redis = client
        self.origin = secrets.token_hex(8)
        self._remote: frozenset[tuple[str, str]] = frozenset()
        self._outbox: deque[bytes] = deque(maxlen=_OUTBOX)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failing = False

    # -- the LiveBus seam --------------------------------------------------------------------

    def publish_many(self, project_id: str, channel: str, items: Sequence[Any]) -> int:
        reached = super().publish_many(project_id, channel, items)
        if items and (project_id, channel) in self._remote:
            self._outbox.append(_encode(_envelope(self.origin, project_id, channel, items)))
            self._wake.set()
        return reached

    def has_subscribers(self, project_id: str | None = None, channel: str | None = None) -> bool:
        if super().has_subscribers(project_id, channel):
            return True
        return any(
            (project_id is None or p == project_id) and (channel is None or c == channel)
            for p, c in self._remote
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._forever(self._listen), name="live-redis-listen"),
            loop.create_task(self._forever(self._send), name="live-redis-send"),
            loop.create_task(self._forever(self._interest), name="live-redis-interest"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _forever(self, step: Any) -> None:
        while True:
            try:
                await step()
                self._failing = False
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                if not self._failing:
                    log.warning(
                        "live bus: Redis unreachable; local events only", extra={"error": str(exc)}
                    )
                self._failing = True
                await asyncio.sleep(1.0)

    # -- the three loops ---------------------------------------------------------------------

    async def _listen(self) -> None:
        async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(CHANNEL)
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    envelope = _decode(message["data"])
                except msgspec.DecodeError:
                    log.warning("live bus: undecodable message ignored")
                    continue
                if envelope.origin != self.origin:
                    LiveBus.publish_many(self, envelope.project, envelope.channel, _items(envelope))

    async def _send(self) -> None:
        while True:
            while not self._outbox:
                self._wake.clear()
                await self._wake.wait()
            async with self._redis.pipeline(transaction=False) as pipe:
                while self._outbox:
                    pipe.publish(CHANNEL, self._outbox.popleft())
                await pipe.execute()

    def _local_interest(self) -> set[tuple[str, str]]:
        return {(p, c) for c in RELAYED for p in LiveBus.projects(self, c)}

    async def _interest(self) -> None:
        announced: set[tuple[str, str]] = set()
        announced_at = float("-inf")
        while True:
            now = time.time()
            local = self._local_interest()
            if local and (local != announced or now - announced_at >= 1.0):
                await self._redis.zadd(
                    INTEREST,
                    {_SEP.join((self.origin, p, c)): now + _INTEREST_TTL for p, c in local},
                )
                announced, announced_at = local, now
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(INTEREST, "-inf", now)
                pipe.zrangebyscore(INTEREST, now, "+inf")
                _, members = await pipe.execute()
            remote = set()
            for member in members:
                text = member.decode() if isinstance(member, bytes) else member
                origin, project, channel = text.split(_SEP, 2)
                if origin != self.origin:
                    remote.add((project, channel))
            self._remote = frozenset(remote)
            await asyncio.sleep(INTEREST_SECONDS)


def close_quietly(client: aioredis.Redis) -> Any:
    """``await`` it at shutdown: closes the pool, ignoring a Redis already gone."""

    async def _close() -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            await client.aclose()

    return _close()
