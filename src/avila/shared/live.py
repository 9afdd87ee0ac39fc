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
are each replica's own. Expiry times are Redis's clock (``TIME`` inside one Lua script that
refreshes, expires and reads), never a replica's: replicas whose clocks disagree still see each
other. How far this replica's clock is from Redis's is kept in
:attr:`RedisLiveBus.clock_skew` (logged when it passes 1 s).

Redis down: each replica's live stream carries its own events only; it resumes by itself when
Redis answers again. Each outage is logged when it starts and when it ends (not per failed
call). Ingestion never waits for the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
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
#: A replica clock this far from Redis's is logged (the relay does not depend on it).
_SKEW_LOGGED_S = 1.0
#: Longest a shutdown waits for the relay's loops, and for its Redis client to close.
STOP_WAIT_S = 5.0
#: ARGV[1] = time to live, ARGV[2..] = this replica's entries to refresh. By Redis's clock:
#: refresh them, drop expired entries, return Redis's time and the entries still alive.
_INTEREST_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expires = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], expires, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return {t[1], t[2], redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')}
"""
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

    def __init__(self, client: aioredis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._redis = client
        #: This replica's wall clock, only compared with Redis's (a seam for tests).
        self._clock = clock
        #: Seconds this replica's clock is ahead of Redis's (negative: behind), last measured.
        self.clock_skew = 0.0
        self._skew_logged = False
        self._interest_script = client.register_script(_INTEREST_SCRIPT)
        self.origin = secrets.token_hex(8)
        self._remote: frozenset[tuple[str, str]] = frozenset()
        self._outbox: deque[bytes] = deque(maxlen=_OUTBOX)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Outage bookkeeping: whether Redis is failing, since / until when (monotonic), and
        # when each loop began its current Redis call.
        self._failing = False
        self._failing_since = float("-inf")
        self._recovered_at = float("-inf")
        self._began: dict[str, float] = {}

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
        """Cancel the three loops and wait for them, at most :data:`STOP_WAIT_S`: a loop
        cancelled inside the Redis client's pub/sub cleanup was seen to never finish (a test
        run hung on it), and shutdown must not wait for it."""
        for task in self._tasks:
            task.cancel()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
        if pending:
            log.warning(
                "live bus: loops did not stop in time; left behind",
                extra={"loops": sorted(t.get_name() for t in pending)},
            )

    async def _forever(self, step: Any) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                if self._unreachable(exc, step.__name__.strip("_")):
                    # The pool's idle connections died with the server: dropped now, they do
                    # not fail one more call each once Redis is back.
                    with contextlib.suppress(redis.RedisError, OSError):
                        await self._redis.connection_pool.disconnect(inuse_connections=False)
                await asyncio.sleep(1.0)

    # One log line when an outage starts and one when it ends, whichever loop notices. A call
    # that began before the last change (the client retries a call for seconds) says nothing
    # about Redis now: its failure after a recovery, or its success after an outage started,
    # is not a new change.

    def _begin(self, loop: str) -> None:
        self._began[loop] = time.monotonic()

    def _unreachable(self, exc: BaseException, loop: str) -> bool:
        """Whether this failure starts an outage."""
        if self._failing or self._began.get(loop, time.monotonic()) < self._recovered_at:
            return False
        self._failing = True
        self._failing_since = time.monotonic()
        log.warning(
            "live bus: Redis unreachable; local events only",
            extra={"error": str(exc), "loop": loop},
        )
        return True

    def _reachable(self, loop: str) -> None:
        if not self._failing or self._began.get(loop, time.monotonic()) < self._failing_since:
            return
        self._failing = False
        self._recovered_at = time.monotonic()
        log.info(
            "live bus: Redis reachable again; relaying between replicas",
            extra={"down_s": round(self._recovered_at - self._failing_since, 1)},
        )

    # -- the three loops ---------------------------------------------------------------------

    async def _listen(self) -> None:
        self._begin("listen")
        async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(CHANNEL)
            self._reachable("listen")
            while True:
                self._begin("listen")
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
                self._begin("send")
                await pipe.execute()
            self._reachable("send")

    def _local_interest(self) -> set[tuple[str, str]]:
        return {(p, c) for c in RELAYED for p in LiveBus.projects(self, c)}

    async def _interest(self) -> None:
        announced: set[tuple[str, str]] = set()
        announced_at = float("-inf")
        while True:
            # Intervals by the monotonic clock; expiry times by Redis's (in the script).
            now = time.monotonic()
            local = self._local_interest()
            refresh: list[str] = []
            if local and (local != announced or now - announced_at >= 1.0):
                refresh = [_SEP.join((self.origin, p, c)) for p, c in local]
            self._begin("interest")
            seconds, micros, members = await self._interest_script(
                keys=[INTEREST], args=[_INTEREST_TTL, *refresh]
            )
            if refresh:
                announced, announced_at = local, now
            self._reachable("interest")
            self._measure_skew(int(seconds) + int(micros) / 1e6)
            remote = set()
            for member in members:
                text = member.decode() if isinstance(member, bytes) else member
                origin, project, channel = text.split(_SEP, 2)
                if origin != self.origin:
                    remote.add((project, channel))
            self._remote = frozenset(remote)
            await asyncio.sleep(INTEREST_SECONDS)

    def _measure_skew(self, redis_now: float) -> None:
        self.clock_skew = self._clock() - redis_now
        off = abs(self.clock_skew) > _SKEW_LOGGED_S
        if off != self._skew_logged:
            self._skew_logged = off
            if off:
                log.warning(
                    "live bus: this replica's clock is off Redis's (the relay uses Redis's)",
                    extra={"skew_s": round(self.clock_skew, 1)},
                )
            else:
                log.info("live bus: this replica's clock agrees with Redis's again")


def close_quietly(client: aioredis.Redis) -> Any:
    """``await`` it at shutdown: closes the pool, ignoring a Redis already gone, and giving up
    after :data:`STOP_WAIT_S` (shutdown must not hang on a connection's cleanup)."""

    async def _close() -> None:
        with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
            await asyncio.wait_for(client.aclose(), STOP_WAIT_S)

    return _close()
