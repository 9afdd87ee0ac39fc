"""Idempotency across replicas: one Redis key per (project, event_id), set with SET NX.

A replica first checks its own :class:`~avila.ingest.idempotency.DedupIndex` (no round trip),
then claims the keys still new in one script call (``SET avila:ev:<key> p:<replica> NX PX``
per key, atomically for the batch). A batch takes all its new keys or none: when one of them
is pending elsewhere, the script gives back those it just took and the replica asks again
shortly. Holding some keys while waiting for others would let two overlapping batches wait
for each other until their claims expire, and then both store the keys (and a claim held
longer than :data:`PENDING_MS` expires under its holder). A
claim is *pending* until the replica's ingest log made the event durable; then it becomes
``d`` (done) for the dedup window. So:

- a key that is ``d`` was stored by some replica: the event is a duplicate;
- a key that is pending elsewhere is waited for (like an in-flight write on one replica): it
  turns ``d`` (duplicate) or disappears (that write failed or its replica died; the pending
  claim expires after :data:`PENDING_MS`) and is then claimed here. A crash between claim and
  acknowledgement therefore never turns a client's retry into a lost event.

A write is acknowledged (202) only after its claims are marked done, so a retry of an
acknowledged event is a duplicate on every replica.

A request cancelled (its client went away) while it waits for the claim script's answer does
not lose that answer: the script call goes on in a task of its own, and the keys it took are
released as soon as it answers, so a retry is not held up until they expire.

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
from collections.abc import Coroutine
from typing import Any

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


# One script call per batch: encoding one command with n keys costs a fraction of a pipeline
# of n commands in the Python client (benchmarks/bench_shared_state.py).
# All or nothing: when some key is pending elsewhere, the keys taken by this call are given
# back (nobody saw them: the script is atomic) and the caller asks again for every key that
# is not a duplicate.
_CLAIM = """
local duplicates, pending, taken = {}, {}, {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    taken[#taken + 1] = key
  elseif redis.call('GET', key) == ARGV[3] then
    duplicates[#duplicates + 1] = i - 1
  else
    pending[#pending + 1] = i - 1
  end
end
if #pending > 0 then
  for _, key in ipairs(taken) do redis.call('DEL', key) end
end
return {duplicates, pending}
"""
_CONFIRM = """
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'EX', ARGV[2]) end
return #KEYS
"""
# Only our own pending claims: one that expired and was taken by another replica stays.
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return #KEYS
"""


class RedisClaims:
    def __init__(self, client: aioredis.Redis, window_seconds: int) -> None:
        self._window = window_seconds
        self._token = b"p:" + secrets.token_hex(8).encode()
        self._claim = client.register_script(_CLAIM)
        self._confirm = client.register_script(_CONFIRM)
        self._release = client.register_script(_RELEASE)
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim(self, keys: list[str]) -> frozenset[int]:
        names = [PREFIX + k for k in keys]
        duplicates: set[int] = set()
        waiting = list(range(len(names)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PENDING_MS / 1000 + 5
        try:
            while waiting:
                # A task of its own, shielded: if this request is cancelled meanwhile, the
                # script may already have taken keys, which only its answer tells.
                call = loop.create_task(
                    self._claim(
                        keys=[names[i] for i in waiting], args=[self._token, PENDING_MS, DONE]
                    )
                )
                try:
                    dup, pending = await asyncio.shield(call)
                except asyncio.CancelledError:
                    self._spawn(self._give_back(call, [keys[i] for i in waiting]))
                    raise
                duplicates.update(waiting[j] for j in dup)
                if not pending:
                    break  # every other key is now claimed here
                # Some key is pending elsewhere (or went between SET and GET): nothing was
                # claimed; ask again shortly for every key that is not a duplicate.
                found = set(dup)
                waiting = [k for j, k in enumerate(waiting) if j not in found]
                if loop.time() > deadline:
                    raise unavailable(TimeoutError("an event claim stayed pending"))
                await asyncio.sleep(_POLL_SECONDS)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return frozenset(duplicates)

    async def _give_back(self, call: asyncio.Task[Any], keys: list[str]) -> None:
        """Release what the claim script ``call`` for ``keys`` took, once it answers; its
        request was cancelled. Exactly those keys: the replica's other requests hold theirs
        under the same token."""
        try:
            dup, pending = await call
        except redis.RedisError as exc:
            # Unknown whether the script ran: what it may have taken expires by itself.
            log.warning(
                "claims of a cancelled request not released; they expire by themselves",
                extra={"events": len(keys), "error": str(exc)},
            )
            return
        if pending:
            return  # all or nothing: the script gave back what it took
        found = set(dup)
        taken = [k for j, k in enumerate(keys) if j not in found]
        if taken:
            await self._settle(taken, stored=False)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def confirm(self, keys: list[str]) -> None:
        # A task, so a client that hangs up cannot stop the marking half-way.
        await asyncio.shield(self._spawn(self._settle(keys, stored=True)))

    def release(self, keys: list[str]) -> None:
        self._spawn(self._settle(keys, stored=False))

    async def _settle(self, keys: list[str], stored: bool) -> None:
        names = [PREFIX + k for k in keys]
        for attempt in range(3):
            try:
                if stored:
                    await self._confirm(keys=names, args=[DONE, self._window])
                else:
                    await self._release(keys=names, args=[self._token])
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
