"""Alarm rules live in the store and are cached per replica; with ``AVILA_REDIS_URL`` a change
made through one replica is reloaded by the others. Two services over one store stand for two
replicas over the shared store (no ClickHouse server can run here)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import msgspec

from avila.industry40.alarms import AlarmRules, AlarmService
from avila.industry40.devices import DeviceRegistry
from avila.live.bus import LiveBus
from avila.shared import sync_client
from avila.shared.changes import LocalChanges, RedisChanges
from avila.storage.duckdb.store import DuckDBStore
from tests.scaleout.conftest import RedisServer
from tests.waiting import until


def _rules(limit: float) -> AlarmRules:
    return msgspec.convert({"rules": [{"metric": "temperature", "max": limit}]}, AlarmRules)


def test_rules_set_through_one_replica_reach_the_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store = DuckDBStore(str(tmp_path / "shared.duckdb"))
    try:
        project = "alarms-" + uuid.uuid4().hex[:6]
        registry = DeviceRegistry(store)
        a, b, alone = (
            AlarmService(store, registry, LiveBus(), changes)
            for changes in (
                RedisChanges(sync_client(redis_server.url)),
                RedisChanges(sync_client(redis_server.url)),
                LocalChanges(),
            )
        )
        for service in (a, b, alone):
            service.start()  # loads, then follows the other replicas' changes
        a.set_rules(project, "oven", _rules(80.0))
        assert [r.max for r in a.rules_for(project, "oven")] == [80.0], "at once where set"
        # seen by B within about RULES_RECHECK_SECONDS, without any read of B's asking for it
        asyncio.run(until(lambda: [r.max for r in b.rules_for(project, "oven")] == [80.0]))
        assert b.rules(project) == {
            "oven": [{"metric": "temperature", "max": 80.0, "min": None, "severity": "warning"}]
        }
        assert alone.rules(project) == {}, "without Redis nothing is reloaded (one replica)"

        b.set_rules(project, "oven", _rules(95.5))
        asyncio.run(until(lambda: [r.max for r in a.rules_for(project, "oven")] == [95.5]))
    finally:
        for service in (a, b, alone):
            service.close()
        store.close()
