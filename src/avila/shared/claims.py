"""Idempotency across replicas: one Redis key per (project, event_id), set with SET NX.

A replica first checks its own :class:`~avila.ingest.idempotency.DedupIndex` (no round trip),
then claims the keys still new in one pipeline: ``SET avila:ev:<key> p:<replica> NX PX``. A
claim is *pending* until the replica's ingest log made the event durable; then it becomes
``d`` (done) for the dedup window. So:

- a key that is ``d`` was stored by some replica: the event is a duplicate;
- a key that is pending elsewhere is waited for (like an in-flight write on one replica): it
  turns ``d`` (duplicate) or disappears (that write failed or its replica died; the pending
  claim expires after :data:`PENDING_MS`) and is then claimed here. A crash between claim and
  acknowledgement therefore never turns a client's retry into a lost event.

A write is acknowledged (202) only after its claims are marked done, so a retry of an
acknowledged event is a duplicate on every replica.

Redis down: the claim fails and the request answers 503 ``shared_state_unavailable`` with
nothing stored. If Redis fails between the durable write and the marking (tried 3 times), the
202 still goes out (the event is durable) and the pending claim expires by itself: a retry
elsewhere after that could be stored twice, never lost. Likewise an event made durable by a
replica that dies before acknowledging it, then retried elsewhere, is stored twice once that
replica restarts and loads its log (at-least-once for unacknowledged writes).
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import redis
import redis.asyncio as aioredis

from avila.shared.keys import unavailable

log = logging.getLogger("avila.shared")

PREFIX = "avila:ev:"
DONE = b"d"
#: How long a claim may stay pending: far above a group fsync, short enough for a retry after
#: a replica crash to get through.
PENDING_MS = 15_000
_POLL_SECONDS = 0.05


class RedisClaims:
    def __init__(self, client: aioredis.Redis, window_seconds: int) -> None:
        self._redis = client
        self._window = window_seconds
        self._token = b"p:" + secrets.token_hex(8).encode()
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim(self, keys: list[str]) -> frozenset[int]:
        names = [PREFIX + k for k in keys]
        duplicates: set[int] = set()
        waiting = list(range(len(names)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PENDING_MS / 1000 + 5
        try:
            while waiting:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for i in waiting:
                        pipe.set(names[i], self._token, nx=True, px=PENDING_MS)
                    claimed = await pipe.execute()
                lost = [i for i, ok in zip(waiting, claimed, strict=True) if not ok]
                if not lost:
                    break
                values = await self._redis.mget([names[i] for i in lost])
                waiting = []
                for i, value in zip(lost, values, strict=True):
                    if value == DONE:
                        duplicates.add(i)
                    else:  # pending elsewhere, or gone since the SET: ask again shortly
                        waiting.append(i)
                if waiting:
                    if loop.time() > deadline:
                        raise unavailable(TimeoutError("an event claim stayed pending"))
                    await asyncio.sleep(_POLL_SECONDS)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return frozenset(duplicates)

    async def confirm(self, keys: list[str]) -> None:
        # A task, so a client that hangs up cannot stop the marking half-way.
        task = asyncio.get_running_loop().create_task(self._settle(keys, stored=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    def release(self, keys: list[str]) -> None:
        task = asyncio.get_running_loop().create_task(self._settle(keys, stored=False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, keys: list[str], stored: bool) -> None:
        for attempt in range(3):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        if stored:
                            pipe.set(PREFIX + key, DONE, ex=self._window)
                        else:
                            pipe.delete(PREFIX + key)
                    await pipe.execute()
                return
            except redis.RedisError as exc:
                if attempt == 2:
                    log.warning(
                        "event claims not settled; they expire by themselves",
                        extra={"events": len(keys), "error": str(exc)},
                    )
                else:
                    await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
