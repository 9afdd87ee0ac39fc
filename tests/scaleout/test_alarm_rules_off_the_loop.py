"""Nothing on a replica's event loop waits for Redis or the store because of alarm rules, and the
shared state's Redis clients go with it at shutdown. A real ``avila serve`` on a real
``redis-server`` frozen with SIGSTOP (a hung Redis: connections accepted, nothing answered)."""

from __future__ import annotations

import asyncio
import signal
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from avila.config import Settings
from avila.industry40 import alarms
from avila.industry40.alarms import RULES_RECHECK_SECONDS, AlarmRules, AlarmService
from avila.industry40.devices import DeviceRegistry
from avila.live.bus import LiveBus
from avila.shared import REDIS_TIMEOUT_SECONDS, open_shared, sync_client
from avila.shared.changes import RedisChanges
from avila.storage.duckdb.store import DuckDBStore
from tests.conftest import TEST_KEY
from tests.scaleout.conftest import RedisServer
from tests.waiting import until

I40 = "/api/v1/industry40"
#: Shorter than the Redis client's timeout: an answer within it did not wait for a frozen Redis.
QUICK = REDIS_TIMEOUT_SECONDS * 0.75


def _reading(device: str, value: float) -> dict[str, Any]:
    ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"device_id": device, "device_type": "oven", "timestamp": ts,
            "metrics": {"temperature": value}}  # fmt: skip


def test_a_frozen_redis_holds_up_no_request_through_the_alarm_rules(
    own_redis: RedisServer, make_server: Callable[..., Any]
) -> None:
    """Before: the telemetry listener looked at the rules' change counter (a blocking Redis GET)
    on the event loop once a second: with Redis frozen, an ingest request held the whole loop
    for the client's timeout, and /health and every other request with it."""
    server = make_server(AVILA_REDIS_URL=own_redis.url)
    headers = {"x-api-key": TEST_KEY}
    device = "oven-" + uuid.uuid4().hex[:6]
    with (
        httpx.Client(base_url=server.url, headers=headers, timeout=30) as patient,
        httpx.Client(base_url=server.url, headers=headers, timeout=QUICK) as quick,
    ):
        rules = {"rules": [{"metric": "temperature", "max": 80}]}
        assert patient.put(f"{I40}/alarms/rules/oven", json=rules).status_code == 200
        assert patient.post(f"{I40}/iot/ingest", json=_reading(device, 20.0)).status_code == 202
        assert own_redis.proc is not None
        own_redis.proc.send_signal(signal.SIGSTOP)
        try:
            # Long enough for the rules' cache to be due for a look at the counter.
            threading.Event().wait(RULES_RECHECK_SECONDS + 0.2)
            for attempt in range(2):
                try:
                    ingest = quick.post(f"{I40}/iot/ingest", json=_reading(device, 90.0 + attempt))
                    health = quick.get("/health")
                    listed = quick.get(f"{I40}/alarms/rules")
                except httpx.TimeoutException as exc:
                    raise AssertionError(f"waited for the frozen Redis: {exc!r}") from None
                assert ingest.status_code == 202, ingest.text
                assert health.status_code == 200, health.text
                assert listed.json()["rules"]["oven"][0]["max"] == 80
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        # Redis answers again: the server still serves and the breach judged meanwhile is listed.
        assert patient.get("/health").status_code == 200

        def listed_active() -> bool:
            body = patient.get(f"{I40}/alarms/active").json()
            return [a["device_id"] for a in body["alarms"]] == [device]

        asyncio.run(until(listed_active, timeout=30))


def _rules(limit: float) -> AlarmRules:
    return msgspec.convert({"rules": [{"metric": "temperature", "max": limit}]}, AlarmRules)


def test_rules_read_on_the_loop_never_wait_for_a_frozen_redis(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """The service's own API: ``rules``/``rules_for`` and the listener's check read the cached
    rules; following the other replicas is the follower thread's business."""
    store = DuckDBStore(str(tmp_path / "shared.duckdb"))
    service = AlarmService(
        store, DeviceRegistry(store), LiveBus(), RedisChanges(sync_client(own_redis.url))
    )
    try:
        service.load()
        service.set_rules("p", "oven", _rules(80.0))
        assert own_redis.proc is not None
        own_redis.proc.send_signal(signal.SIGSTOP)
        try:
            threading.Event().wait(RULES_RECHECK_SECONDS + 0.2)
            answered: list[Any] = []

            def read() -> None:
                answered.append(service.rules("p"))
                answered.append(service.rules_for("p", "oven"))

            reader = threading.Thread(target=read)
            reader.start()
            reader.join(QUICK)
            in_time = len(answered) == 2
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        reader.join()
        assert in_time, "reading the rules waited for the frozen Redis"
        assert [r.max for r in answered[1]] == [80.0]
    finally:
        service.close()
        store.close()


def test_set_rules_are_seen_at_once_while_the_follower_reloads(
    own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that read the store before a change must not put back the replaced rules: the
    replica that set them answers its next request with them (here: each time, while another
    replica's changes keep the follower reloading, 100 looks a second instead of 1)."""
    monkeypatch.setattr(alarms, "RULES_RECHECK_SECONDS", 0.01)
    store = DuckDBStore(str(tmp_path / "shared.duckdb"))
    a, b = (
        AlarmService(store, DeviceRegistry(store), LiveBus(), RedisChanges(sync_client(url)))
        for url in (own_redis.url, own_redis.url)
    )
    stop = threading.Event()

    def other_replica() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            b.set_rules("p", f"press-{n % 5}", _rules(float(n)))
            stop.wait(0.01)

    try:
        a.start()
        other = threading.Thread(target=other_replica)
        other.start()
        try:
            for limit in range(40):
                a.set_rules("p", "oven", _rules(float(limit)))
                assert [r.max for r in a.rules_for("p", "oven")] == [float(limit)]
                threading.Event().wait(0.05)
        finally:
            stop.set()
            other.join()
    finally:
        a.close()
        store.close()


def test_close_closes_the_shared_states_redis_clients(own_redis: RedisServer) -> None:
    """Before: the synchronous clients (keys, change counters, leases, alarm states) kept their
    connections open after ``SharedState.close``."""
    watcher = redis.Redis.from_url(own_redis.url)

    def connections() -> set[int]:
        return {int(c["id"]) for c in watcher.client_list()}

    settings = Settings.from_env(
        environ={"AVILA_REDIS_URL": own_redis.url, "API_KEYS": TEST_KEY}, env_file=None
    )

    def use(shared: Any) -> None:
        shared.keys.resolve("not-a-key-" + uuid.uuid4().hex)
        shared.changes.bump("close-test")
        shared.changes.version("close-test")
        shared.leases.acquire("close-test", 5)
        shared.alarm_states.raised("close-test")

    async def scenario() -> None:
        before = connections()
        shared = open_shared(settings)
        await asyncio.to_thread(use, shared)
        opened = connections() - before
        assert opened, "the parts never talked to Redis"
        await shared.close()
        await until(lambda: not (connections() & opened))

    try:
        asyncio.run(scenario())
    finally:
        watcher.close()
