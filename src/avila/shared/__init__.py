"""State that replicas share: chosen once at start from ``AVILA_REDIS_URL``.

Without Redis every part is the in-process one (one replica, exactly the embedded tier); with
it, API keys, idempotency claims, rate-limit counters, the live bus, raised threshold alarms
and trained models live in Redis (docs/shared-state.md). Callers only see the interfaces:
``KeyRegistry``, ``EventClaims``, ``RateLimiter``, ``LiveBus`` and ``RunRegistry``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from avila.config import Settings
from avila.errors import ConfigError
from avila.ingest.idempotency import EventClaims, LocalClaims
from avila.live.bus import LiveBus
from avila.ml.registry import ModelRegistry, RunRegistry
from avila.security.keys import KeyRegistry, KeyStore
from avila.security.ratelimit import RateLimiter
from avila.shared.alarm_states import AlarmStates, LocalAlarmStates
from avila.shared.changes import Changes, LocalChanges
from avila.shared.leases import Leases, LocalLeases

if TYPE_CHECKING:
    # The client library loads only where AVILA_REDIS_URL is set (~0.15 CPU-s of every start).
    import redis
    import redis.asyncio as aioredis

#: Key of the replica's :class:`~avila.shared.changes.Changes` in ``AppContext.state``.
CHANGES_KEY = "shared_changes"
#: Key of the replica's :class:`~avila.shared.leases.Leases` in ``AppContext.state``.
LEASES_KEY = "shared_leases"
#: Key of the replica's :class:`~avila.shared.alarm_states.AlarmStates` in ``AppContext.state``.
ALARM_STATES_KEY = "shared_alarm_states"

#: Seconds a Redis call may take before the replica answers 503 (or degrades, for the bus).
REDIS_TIMEOUT_SECONDS = 2.0


def open_key_registry(settings: Settings) -> KeyRegistry:
    """Where ``avila serve`` and ``avila keys`` find API keys."""
    if settings.redis_url:
        from avila.shared.keys import RedisKeyStore

        return RedisKeyStore(sync_client(settings.redis_url), settings.api_keys)
    return KeyStore(settings.data_dir / "keys.sqlite", settings.api_keys)


def open_model_registry(settings: Settings) -> RunRegistry:
    """Where ``avila serve`` and ``avila train`` keep trained models."""
    if settings.redis_url:
        from avila.shared.models import RedisModelRegistry

        return RedisModelRegistry(sync_client(settings.redis_url))
    return ModelRegistry(settings.data_dir / "models")


_URL_SHAPE = "redis://[user:password@]host:6379/0 (rediss:// for TLS, unix:///path?db=0)"


def check_redis_url(url: str) -> str:
    """``url`` if Redis clients would connect where it says, else a :class:`ConfigError`.

    The clients forgive too much: a database that is not a number (``/1O``) silently becomes
    database 0, so one replica with a typo would share nothing with the others. The message
    never repeats the URL (it may hold a password).
    """
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError as exc:
        raise ConfigError(f"AVILA_REDIS_URL must look like {_URL_SHAPE}: {exc}") from None
    if parts.scheme == "unix":
        problem = "" if parts.path else "no socket path"
    elif not parts.hostname:
        problem = "no host"
    elif not re.fullmatch(r"/?|/\d+", unquote(parts.path)):
        problem = f"the database must be a number, got {unquote(parts.path)[1:]!r}"
    else:
        problem = ""
    if problem:
        raise ConfigError(f"AVILA_REDIS_URL must look like {_URL_SHAPE}: {problem}")
    return url


def sync_client(url: str) -> redis.Redis:
    import redis

    check_redis_url(url)
    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


def async_client(url: str) -> aioredis.Redis:
    import redis.asyncio as aioredis

    check_redis_url(url)
    return aioredis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


@dataclass
class SharedState:
    """One replica's view of the shared state (see the module doc)."""

    keys: KeyRegistry
    claims: EventClaims
    rate_limiter: RateLimiter
    bus: LiveBus
    #: Counters that tell replicas to reload what they cache from the store (alarm rules).
    changes: Changes = field(default_factory=LocalChanges)
    #: Work done once per period by one replica of many (alert deliveries).
    leases: Leases = field(default_factory=LocalLeases)
    #: Which threshold alarms are raised (telemetry judged on any replica).
    alarm_states: AlarmStates = field(default_factory=LocalAlarmStates)
    _async_client: aioredis.Redis | None = field(default=None, repr=False)
    #: The synchronous client the keys, counters, leases and alarm states share.
    _sync_client: redis.Redis | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start background work (the Redis bus's listener, the key list's follower); call on
        the running loop."""
        self.bus.start()
        self.keys.start()

    async def close(self) -> None:
        await self.bus.stop()
        await self.claims.close()
        if self._async_client is not None:
            from avila.shared.live import close_quietly

            await close_quietly(self._async_client)
        # The key follower (it may sit in a look at a hung Redis): blocks, so off the loop.
        await asyncio.to_thread(self.keys.close)
        await self.rate_limiter.aclose()
        if self._sync_client is not None:
            # Call after the modules' shutdown: their threads (alarm judging, rule following)
            # are done with it. Closing only drops sockets, but off the loop all the same.
            await asyncio.to_thread(self._sync_client.close)


def open_shared(settings: Settings) -> SharedState:
    if not settings.redis_url:
        return SharedState(
            keys=open_key_registry(settings),
            claims=LocalClaims(),
            rate_limiter=RateLimiter(settings.rate_limit_per_minute),
            bus=LiveBus(),
        )
    from avila.shared.alarm_states import RedisAlarmStates
    from avila.shared.changes import RedisChanges
    from avila.shared.claims import RedisClaims
    from avila.shared.keys import RedisKeyStore
    from avila.shared.leases import RedisLeases
    from avila.shared.live import RedisLiveBus

    client = async_client(settings.redis_url)
    # One synchronous client (one thread-safe connection pool) for the parts that block,
    # closed with the rest by SharedState.close.
    blocking = sync_client(settings.redis_url)
    return SharedState(
        keys=RedisKeyStore(blocking, settings.api_keys),
        claims=RedisClaims(client, settings.dedup_window_hours * 3600),
        rate_limiter=RateLimiter(settings.rate_limit_per_minute, settings.redis_url),
        bus=RedisLiveBus(client),
        changes=RedisChanges(blocking),
        leases=RedisLeases(blocking),
        alarm_states=RedisAlarmStates(blocking),
        _async_client=client,
        _sync_client=blocking,
    )
