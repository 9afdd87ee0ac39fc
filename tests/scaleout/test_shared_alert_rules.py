"""Alert rules with replicas (``AVILA_REDIS_URL``): every replica evaluates every rule, yet a
firing is delivered once, and a rule created or deleted through one replica reaches the others.
Two schedulers over one store stand for two replicas over the shared store (no ClickHouse
server can run here); Redis and the webhook receiver are real."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from avila.alerts import AlertRepository, AlertScheduler, Deliverer, RuleSpec, SmtpConfig
from avila.alerts.scheduler import RULES_CHANGES, RULES_RECHECK_SECONDS
from avila.live.bus import LiveBus
from avila.shared import sync_client
from avila.shared.changes import RedisChanges
from avila.shared.leases import RedisLeases
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.schema import EVENT_SCHEMA
from avila.testing import free_port
from tests.alerts.receivers import HttpReceiver
from tests.scaleout.conftest import RedisServer

EVALUATE_EVERY_SECONDS = 0.2
BREACHING_SECONDS = 3.0


def _login(store: DuckDBStore, project: str, at: datetime) -> None:
    columns: dict[str, Any] = {name: [None] for name in EVENT_SCHEMA.names}
    columns.update(
        project_id=[project], event_id=[uuid.uuid4().hex], user_id=["u1"], ts=[at],
        received_at=[at], event_type=["login"], data=["{}"], metadata=["{}"], context=["{}"],
    )  # fmt: skip
    store.append_events(pa.table(columns, schema=EVENT_SCHEMA))


def _replica(store: DuckDBStore, redis_url: str) -> AlertScheduler:
    return AlertScheduler(
        AlertRepository(store),
        Deliverer(SmtpConfig(host=""), attempts=1, timeout=5),
        LiveBus(),
        interval=EVALUATE_EVERY_SECONDS,
        changes=RedisChanges(sync_client(redis_url)),
        leases=RedisLeases(sync_client(redis_url)),
    )


async def _two_replicas(store: DuckDBStore, redis_url: str, hook: str) -> dict[str, Any]:
    """Both replicas' own evaluation loops run, as in ``avila serve``, while a login makes the
    rule fire; then the rule is deleted through the other replica."""
    project = "alerts-" + uuid.uuid4().hex[:6]
    a, b = _replica(store, redis_url), _replica(store, redis_url)
    for replica in (a, b):
        await replica.start()
    try:
        spec = msgspec.convert(
            {
                "name": "any login",
                "metric": {"kind": "event_count", "condition_type": "login"},
                "condition": {"op": ">", "threshold": 0},
                "window_seconds": 3600,
                "destinations": [{"type": "webhook", "url": hook}],
            },
            RuleSpec,
        )
        rule = await a.add_rule(project, spec)
        await asyncio.sleep(RULES_RECHECK_SECONDS + 0.2)
        known_by_b = rule.id in b.rules
        _login(store, project, datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5))
        await asyncio.sleep(BREACHING_SECONDS)  # ~15 rounds of each replica, all breaching
        assert await b.delete_rule(project, rule.id)
        await asyncio.sleep(RULES_RECHECK_SECONDS + 0.2)
        return {"known_by_b": known_by_b, "left_in_a": rule.id in a.rules}
    finally:
        for replica in (a, b):
            await replica.stop()  # waits for deliveries in flight


def test_a_firing_is_delivered_once_by_one_of_two_replicas(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store = DuckDBStore(tmp_path / "shared.duckdb")
    receiver = HttpReceiver()
    try:
        outcome = asyncio.run(_two_replicas(store, redis_server.url, receiver.url("/hook")))
        assert outcome["known_by_b"], "a rule created through A is evaluated by B"
        assert len(receiver.on("/hook")) == 1
        assert json.loads(receiver.on("/hook")[0].body)["rule"] == "any login"
        firings = store.query("SELECT count(*) FROM alert_firings")
        assert firings[0][0] == 1
        assert not outcome["left_in_a"], "a rule deleted through B leaves A"
    finally:
        receiver.close()
        store.close()


def test_without_redis_a_lease_is_granted_and_a_change_is_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Held by one replica, the lease is refused to the other; with Redis unreachable it is
    granted (a duplicate alert is the lesser harm than none) and the replica says so."""
    holder, other = (RedisLeases(sync_client(redis_server.url)) for _ in range(2))
    name = "alert:" + uuid.uuid4().hex
    assert holder.acquire(name, 60) and not other.acquire(name, 60)
    unreachable = RedisLeases(sync_client(f"redis://127.0.0.1:{free_port()}/0"))
    with caplog.at_level(logging.WARNING, logger="avila.shared"):
        assert unreachable.acquire(name, 60)
    assert "lease granted without Redis" in caplog.text
    # A rule change made meanwhile is stored but not announced: logged, not an error.
    with caplog.at_level(logging.WARNING, logger="avila.shared"):
        RedisChanges(sync_client(f"redis://127.0.0.1:{free_port()}/0")).bump(RULES_CHANGES)
    assert "change not announced" in caplog.text
