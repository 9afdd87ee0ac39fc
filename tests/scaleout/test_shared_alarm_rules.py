"""Alarm rules live in the store and are cached per replica; with ``AVILA_REDIS_URL`` a change
made through one replica is reloaded by the others. Two services over one store stand for two
replicas over the shared store (no ClickHouse server can run here)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgspec

from avila.industry40.alarms import RULES_RECHECK_SECONDS, AlarmRules, AlarmService
from avila.industry40.devices import DeviceRegistry
from avila.live.bus import LiveBus
from avila.shared import sync_client
from avila.shared.changes import LocalChanges, RedisChanges
from avila.storage.duckdb.store import DuckDBStore
from tests.scaleout.conftest import RedisServer


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
            service.load()
        a.set_rules(project, "oven", _rules(80.0))
        time.sleep(RULES_RECHECK_SECONDS + 0.1)
        assert b.rules(project) == {
            "oven": [{"metric": "temperature", "max": 80.0, "min": None, "severity": "warning"}]
        }
        assert [r.max for r in b.rules_for(project, "oven")] == [80.0]
        assert alone.rules(project) == {}, "without Redis nothing is reloaded (one replica)"

        b.set_rules(project, "oven", _rules(95.5))
        time.sleep(RULES_RECHECK_SECONDS + 0.1)
        assert [r.max for r in a.rules_for(project, "oven")] == [95.5]
    finally:
        store.close()
