"""API keys in Redis, for replicas that share ``AVILA_REDIS_URL`` (same interface as
:class:`avila.security.keys.KeyStore`).

Layout: hash ``avila:keys`` maps key id -> JSON record (with the key's SHA-256, never the key);
``avila:keys:version`` counts changes. Each replica keeps the active keys in memory; a follower
thread asks Redis for the version every :data:`RECHECK_SECONDS` and reloads the records when
it changed. So a revoke on any replica (or ``avila keys revoke``) is refused everywhere within
a second, and a request costs no Redis round trip. An unknown key asks the follower for a look
at once (a key created on another replica works at once), at most every
:data:`MISS_RECHECK_SECONDS` whatever the number of unknown keys presented.

Nothing here waits for Redis on the event loop (:meth:`RedisKeyStore.resolve_async`, and the
keys admin routes' ``*_async`` methods): a hung Redis (connections accepted, nothing answered)
holds up the follower thread and the admin calls' own threads, not the requests.

Redis down: a request with a stored key answers 503 ``shared_state_unavailable`` rather than
trust a list that may miss a revocation: when the last look failed, or when the list is older
than :data:`STALE_SECONDS` (a look hung). Bootstrap keys (``API_KEYS``) never need Redis.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import redis

from avila.errors import SharedStateUnavailable
from avila.security.keys import KeyInfo, Principal, bootstrap_principals, hash_key, new_key

log = logging.getLogger("avila.shared")

RECORDS = "avila:keys"
VERSION = "avila:keys:version"
#: How often the follower reads the version (and, after a failed look, how soon it retries
#: at the latest).
RECHECK_SECONDS = 0.5
#: The revocation guarantee ("within 1 s"): a list whose last successful look started longer
#: ago than this is not trusted (503), so a hung Redis cannot stretch it.
STALE_SECONDS = 1.0
#: An unknown key asks for a look sooner, so a key created on another replica works at once;
#: the bound keeps a flood of bad keys to at most 20 version reads a second (misses that wait
#: together share one look).
MISS_RECHECK_SECONDS = 0.05
#: How long an unknown key waits for that look before the answer is 503.
MISS_WAIT_SECONDS = 1.0
#: How long :meth:`RedisKeyStore.close` waits for the follower to end.
CLOSE_WAIT_SECONDS = 3.0
#: Threads of the keys admin calls (list, create, revoke over HTTP): their own, not the loop's
#: default executor (``/health`` uses it), so admin calls hung on Redis hold up nothing else.
ADMIN_THREADS = 2
#: How long an admin call waits (queued behind hung ones included) before the answer is 503:
#: a bit longer than the client's timeout (``avila.shared.REDIS_TIMEOUT_SECONDS``), so a call
#: that ran usually ends with the client's own error.
ADMIN_WAIT_SECONDS = 3.0

_T = TypeVar("_T")

# Revoke in one atomic step: only an active key, only of the given project (when given).
_REVOKE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local record = cjson.decode(raw)
if record['revoked_at'] ~= cjson.null then return 0 end
if ARGV[3] ~= '' and record['project_id'] ~= ARGV[3] then return 0 end
record['revoked_at'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(record))
redis.call('INCR', KEYS[2])
return 1
"""


class _Record(msgspec.Struct):
    key_id: str
    key_hash: str
    project_id: str
    scopes: list[str]
    name: str
    created_at: str
    revoked_at: str | None = None

    def info(self) -> KeyInfo:
        return KeyInfo(
            self.key_id,
            self.project_id,
            tuple(self.scopes),
            self.name,
            self.created_at,
            self.revoked_at,
        )


_decode = msgspec.json.Decoder(_Record).decode


def unavailable(exc: Exception) -> SharedStateUnavailable:
    return SharedStateUnavailable(
        f"the shared state (Redis) did not answer: {type(exc).__name__}; retry shortly",
        details=[{"service": "redis"}],
    )


class RedisKeyStore:
    """Keys in Redis plus the bootstrap keys from ``API_KEYS``.

    A follower thread (started by :meth:`start`, or by the first :meth:`resolve_async`) keeps
    the active keys in memory: it reads the version every :data:`RECHECK_SECONDS` and the
    records when the version moved. :meth:`resolve_async`, the server's lookup, never talks to
    Redis on the event loop: a known key is answered from memory, an unknown one waits (off the
    loop) for the follower's next look, which a miss asks for at most every
    :data:`MISS_RECHECK_SECONDS`, shared by every miss that waits for it. :meth:`resolve` is
    the blocking lookup for callers outside the loop (the CLI, tests).
    """

    def __init__(self, client: redis.Redis, bootstrap_keys: tuple[str, ...] = ()) -> None:
        self._redis = client
        self._bootstrap = bootstrap_principals(bootstrap_keys)
        self._revoke = client.register_script(_REVOKE)
        #: Guards the fields below it (held briefly, never across a Redis call).
        self._cond = threading.Condition()
        self._active: dict[str, Principal] = {}
        #: Start (monotonic) of the last look that succeeded; of the last look at all.
        self._looked_at = float("-inf")
        self._tried_at = float("-inf")
        #: Start of the look under way (None: no look under way).
        self._looking_since: float | None = None
        #: Why the last look failed (None: it succeeded).
        self._failure: redis.RedisError | None = None
        #: Keys revoked by this replica: never served again, even by a look that read Redis
        #: before the revoke and finished after it.
        self._revoked_here: set[str] = set()
        #: Misses waiting for a look that starts after they asked: (asked at, wake).
        self._waiters: list[tuple[float, Callable[[], None]]] = []
        self._wanted = False
        self._closed = False
        self._follower: threading.Thread | None = None
        #: One look at a time (held across the Redis calls, never on the event loop).
        self._looking = threading.Lock()
        self._version: Any = object()
        #: Runs the admin calls off the loop (threads start on first use).
        self._admin = ThreadPoolExecutor(ADMIN_THREADS, thread_name_prefix="avila-keys-admin")

    def create(self, project_id: str, scopes: list[str], name: str = "") -> tuple[str, KeyInfo]:
        secret, info = new_key(project_id, scopes, name)
        record = _Record(
            info.key_id,
            hash_key(secret),
            info.project_id,
            list(info.scopes),
            name,
            info.created_at,
        )
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(RECORDS, info.key_id, msgspec.json.encode(record))
                pipe.incr(VERSION)
                created, _ = pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        if not created:  # 48 random bits collided: vanishingly rare, so simply try again
            return self.create(project_id, scopes, name)
        return secret, info

    def _records(self) -> list[_Record]:
        try:
            raw = self._redis.hvals(RECORDS)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return [_decode(r) for r in raw]

    def list(self, project_id: str | None = None) -> list[KeyInfo]:
        records = [r for r in self._records() if project_id is None or r.project_id == project_id]
        records.sort(key=lambda r: (r.created_at, r.key_id))
        return [r.info() for r in records]

    def revoke(self, key_id: str, project_id: str | None = None) -> bool:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            done = self._revoke(keys=[RECORDS, VERSION], args=[key_id, stamp, project_id or ""])
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        if done:  # this replica refuses its own revoke at once
            with self._cond:
                self._revoked_here.add(key_id)
                self._active = {h: p for h, p in self._active.items() if p.key_id != key_id}
        return bool(done)

    # -- the keys admin routes, off the loop -------------------------------------------------

    async def _off_loop(self, call: Callable[[], _T]) -> _T:
        """``call()`` in the admin threads; 503 ``shared_state_unavailable`` when Redis does
        not answer within :data:`ADMIN_WAIT_SECONDS` (a call that reached Redis may still be
        done when it wakes: a 503 create left an unusable key, a 503 revoke may have revoked)."""
        with self._cond:
            if self._closed:
                raise unavailable(redis.ConnectionError())
            running = asyncio.wrap_future(self._admin.submit(call))
        try:
            return await asyncio.wait_for(running, ADMIN_WAIT_SECONDS)
        except TimeoutError:  # wait_for cancelled the call if it had not started
            raise unavailable(redis.TimeoutError()) from None

    async def create_async(
        self, project_id: str, scopes: builtins.list[str], name: str = ""
    ) -> tuple[str, KeyInfo]:
        return await self._off_loop(lambda: self.create(project_id, scopes, name))

    async def list_async(self, project_id: str | None = None) -> builtins.list[KeyInfo]:
        return await self._off_loop(lambda: self.list(project_id))

    async def revoke_async(self, key_id: str, project_id: str | None = None) -> bool:
        return await self._off_loop(lambda: self.revoke(key_id, project_id))

    # -- following Redis ---------------------------------------------------------------------

    def _look(self) -> None:
        """Read the version (and the records when it moved); raises 503 when Redis fails."""
        with self._looking:
            started = time.monotonic()
            with self._cond:
                self._looking_since = started
            records: list[_Record] | None = None
            try:
                version = self._redis.get(VERSION)
                if version != self._version:
                    records = [_decode(r) for r in self._redis.hvals(RECORDS)]
            except redis.RedisError as exc:
                with self._cond:
                    self._tried_at, self._failure = started, exc
                raise unavailable(exc) from exc
            finally:
                with self._cond:
                    self._looking_since = None
            with self._cond:
                if records is not None:
                    self._active = {
                        r.key_hash: Principal(r.key_id, r.project_id, frozenset(r.scopes))
                        for r in records
                        if r.revoked_at is None and r.key_id not in self._revoked_here
                    }
                    self._version = version
                self._looked_at = self._tried_at = started
                self._failure = None
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        with self._cond:
            tried = self._tried_at
            done = [wake for asked, wake in self._waiters if asked <= tried]
            self._waiters = [(asked, wake) for asked, wake in self._waiters if asked > tried]
        for wake in done:
            wake()

    def _follow(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    soon = self._wanted or self._failure is not None
                    due = self._tried_at + (MISS_RECHECK_SECONDS if soon else RECHECK_SECONDS)
                    wait = due - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return
                self._wanted = False
            try:
                self._look()
            except SharedStateUnavailable:
                self._wake_waiters()  # they answer 503
            except Exception:  # a record that does not decode ...: keep following
                log.exception("API keys: reading the keys from Redis failed")
                with self._cond:
                    self._tried_at = time.monotonic()
                self._wake_waiters()

    def start(self) -> None:
        """Start following Redis (idempotent; nothing after :meth:`close`)."""
        with self._cond:
            if self._follower is not None or self._closed:
                return
            self._follower = threading.Thread(
                target=self._follow, name="avila-keys-follower", daemon=True
            )
            self._follower.start()

    def close(self) -> None:
        """Stop the follower (a look hung on Redis is left to its timeout: daemon thread) and
        the admin threads (a call hung on Redis ends with the client's timeout)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            follower = self._follower
            waiting, self._waiters = self._waiters, []
        self._admin.shutdown(wait=False)
        for _, wake in waiting:
            wake()
        if follower is not None:
            follower.join(CLOSE_WAIT_SECONDS)

    # -- lookups -----------------------------------------------------------------------------

    def _served(self, digest: str, now: float) -> Principal | None | _Unknown:
        """The snapshot's answer for ``digest``: a principal, None (not in it), or
        :data:`_UNLOOKED` (not to be trusted before a fresh look: never read yet, or stale
        while the follower was merely late); 503 when Redis failed, or the snapshot is older
        than the revocation guarantee allows while a look waits for Redis."""
        with self._cond:
            failure = self._failure
            looked_at = self._looked_at
            looking_since = self._looking_since
            found = self._active.get(digest)
        if failure is not None:
            raise unavailable(failure)
        if now - looked_at <= STALE_SECONDS:
            return found
        if looking_since is not None and looked_at != float("-inf"):
            raise unavailable(redis.TimeoutError())  # Redis hangs: answer at once
        return _UNLOOKED

    async def resolve_async(self, key: str) -> Principal | None:
        """The principal of ``key`` (None: unknown or revoked) without waiting on the event
        loop for Redis; 503 ``shared_state_unavailable`` when Redis does not answer."""
        digest = hash_key(key)
        found = self._bootstrap.get(digest)
        if found is not None:
            return found
        self.start()
        served = self._served(digest, time.monotonic())
        if isinstance(served, Principal):
            return served
        await self._fresh_look()
        served = self._served(digest, time.monotonic())
        if isinstance(served, _Unknown):  # the look came, yet the list is stale: not trusted
            raise unavailable(redis.TimeoutError())
        return served

    async def _fresh_look(self) -> None:
        """Wait for a look of the follower that starts from now on (503 past
        :data:`MISS_WAIT_SECONDS`: a Redis that slow counts as not answering)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle)

        entry = (time.monotonic(), wake)
        with self._cond:
            if self._closed:
                raise unavailable(redis.ConnectionError())
            self._waiters.append(entry)
            self._wanted = True
            self._cond.notify_all()
        try:
            await asyncio.wait_for(done, MISS_WAIT_SECONDS)
        except TimeoutError:
            raise unavailable(redis.TimeoutError()) from None
        finally:
            with self._cond, contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def resolve(self, key: str) -> Principal | None:
        """The blocking lookup, for callers outside the event loop: looks at Redis itself
        when the snapshot is due (or misses the key and was not looked at for
        :data:`MISS_RECHECK_SECONDS`)."""
        digest = hash_key(key)
        found = self._bootstrap.get(digest)
        if found is not None:
            return found
        now = time.monotonic()
        with self._cond:
            found = self._active.get(digest)
            due = self._failure is not None or now - self._looked_at >= RECHECK_SECONDS
            due = due or (found is None and now - self._tried_at >= MISS_RECHECK_SECONDS)
        if due:
            self._look()
            with self._cond:
                found = self._active.get(digest)
        return found


class _Unknown:
    """The snapshot needs a fresh look before it answers."""


_UNLOOKED = _Unknown()
