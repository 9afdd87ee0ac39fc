"""Change counters and leases (``avila.shared.changes``, ``avila.shared.leases``) on a real
``redis-server``: two instances stand for two replicas, one store for the shared store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from avila.industry40.alarms import AlarmRules, AlarmService
from avila.industry40.devices import DeviceRegistry
from avila.live.bus import LiveBus
from avila.shared import sync_client
from avila.shared.changes import RedisChanges
from avila.shared.leases import Leases, LocalLeases, RedisLeases
from avila.storage.duckdb.store import DuckDBStore
from tests.scaleout.conftest import RedisServer
from tests.waiting import until


def _rules(limit: float) -> AlarmRules:
    return msgspec.convert({"rules": [{"metric": "temperature", "max": limit}]}, AlarmRules)


def test_a_change_after_redis_lost_its_counters_is_still_reloaded(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Before: the counter restarted at 0 with an empty Redis, so the first change after the
    restart brought it back to 1, the version B had already seen: B never reloaded the rules
    and judged readings against the old limit until some later change."""
    store = DuckDBStore(str(tmp_path / "shared.duckdb"))
    try:
        project = "alarms-" + uuid.uuid4().hex[:6]
        registry = DeviceRegistry(store)
        a, b = (
            AlarmService(store, registry, LiveBus(), RedisChanges(sync_client(own_redis.url)))
            for _ in range(2)
        )
        a.start()
        b.start()
        a.set_rules(project, "oven", _rules(80.0))
        asyncio.run(until(lambda: [r.max for r in b.rules_for(project, "oven")] == [80.0]))

        own_redis.stop()
        own_redis.start()  # same port, no persistence: every counter is gone
        a.set_rules(project, "oven", _rules(95.5))
        asyncio.run(until(lambda: [r.max for r in b.rules_for(project, "oven")] == [95.5]))
    finally:
        a.close()
        b.close()
        store.close()


def test_each_change_moves_the_version(redis_server: RedisServer) -> None:
    a, b = (RedisChanges(sync_client(redis_server.url)) for _ in range(2))
    name = "counter-" + uuid.uuid4().hex
    assert a.version(name) == b.version(name) == 0  # never changed
    seen = {0}
    for changes in (a, b, a, a, b):
        changes.bump(name)
        version = a.version(name)
        assert version == b.version(name)
        assert version not in seen
        seen.add(version)


def _redis_leases(url: str) -> Callable[[], Leases]:
    return lambda: RedisLeases(sync_client(url))


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_the_holder_of_a_lease_may_take_it_again(redis_server: RedisServer, backend: str) -> None:
    """Same calls, same answers with or without Redis for one replica: ``acquire`` is True
    when nobody *else* holds the lease. Before: Redis refused the holder its own lease, so a
    replica whose rule was due again (its cooldown counted from the firing's time, the lease
    from a moment later) stayed quiet for a round, and a rule with cooldown 0 fired at most
    once per interval instead of every round as on one replica without Redis."""
    make: Callable[[], Leases] = (
        LocalLeases if backend == "local" else _redis_leases(redis_server.url)
    )
    holder = make()
    name = "alert:" + uuid.uuid4().hex
    assert holder.acquire(name, 60)
    assert holder.acquire(name, 60), "the holder is refused its own lease"
    assert holder.acquire(name, 0.5)


def test_a_lease_taken_again_by_its_holder_is_still_refused_to_others(
    redis_server: RedisServer,
) -> None:
    holder, other = (RedisLeases(sync_client(redis_server.url)) for _ in range(2))
    name = "alert:" + uuid.uuid4().hex
    assert holder.acquire(name, 0.3)
    assert not other.acquire(name, 60)
    assert holder.acquire(name, 0.3)  # renewed for 0.3 s from now
    assert not other.acquire(name, 60)
    time.sleep(0.5)  # expired: whoever asks first takes it, and then only they
    assert other.acquire(name, 60)
    assert not holder.acquire(name, 60), "a lease that expired and was taken was renewed"
    assert other.acquire(name, 60)
