"""Raised threshold alarms are one set for every replica (``AVILA_REDIS_URL``): readings of one
device judged on different replicas raise an alarm once and clear it once, and every replica
lists the same active alarms. Two ``AlarmService``s over one store and one real redis-server
stand for two replicas; the last test runs two real servers."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

from avila.industry40.alarms import AlarmRules, AlarmService
from avila.industry40.devices import DeviceRegistry
from avila.industry40.telemetry import Reading, TelemetryRows, build_rows
from avila.live.bus import LiveBus, Subscription
from avila.shared import sync_client
from avila.shared.alarm_states import AlarmStates, LocalAlarmStates, RedisAlarmStates
from avila.storage.duckdb.store import DuckDBStore
from avila.testing import free_port
from tests.conftest import TEST_KEY
from tests.industry40.test_i40_mqtt import wait_for
from tests.scaleout.conftest import RedisServer

T0 = datetime(2026, 11, 20, 8, tzinfo=UTC)
I40 = "/api/v1/industry40"


class Replica:
    def __init__(self, store: DuckDBStore, project: str, states: AlarmStates) -> None:
        self.bus = LiveBus()
        self.alerts: Subscription = self.bus.subscribe(project, ["alerts"])
        self.service = AlarmService(store, DeviceRegistry(store), self.bus, states=states)
        self.service.load()
        self.project = project

    def judge(self, device: str, *values: float, at: int = 0) -> None:
        readings = [
            (i, Reading(device_id=device, device_type="oven", metrics={"temperature": v},
                        timestamp=T0 + timedelta(seconds=at + i)))
            for i, v in enumerate(values)
        ]  # fmt: skip
        rows: TelemetryRows = build_rows(self.project, readings, now=T0 + timedelta(hours=1))[0]
        self.service.judge(rows)

    def announced(self) -> list[tuple[str, str, float]]:
        out = []
        while (item := self.alerts.get_nowait()) is not None:
            alert = item[1]
            out.append((alert["device_id"], alert["state"], alert["value"]))
        return out


def _replicas(
    store: DuckDBStore, make_states: Callable[[], AlarmStates]
) -> tuple[Replica, Replica]:
    project = "alarms-" + uuid.uuid4().hex[:6]
    a, b = Replica(store, project, make_states()), Replica(store, project, make_states())
    rules = msgspec.convert({"rules": [{"metric": "temperature", "max": 80.0}]}, AlarmRules)
    a.service.set_rules(project, "oven", rules)
    b.service.load()
    return a, b


def test_a_device_judged_on_two_replicas_raises_and_clears_once(
    redis_server: RedisServer, store: DuckDBStore
) -> None:
    a, b = _replicas(store, lambda: RedisAlarmStates(sync_client(redis_server.url)))
    a.judge("oven-1", 90.0)
    b.judge("oven-1", 95.0, at=10)  # still in breach: already raised, on A
    assert a.announced() == [("oven-1", "raised", 90.0)]
    assert b.announced() == []
    assert [(x["device_id"], x["value"]) for x in b.service.active(b.project)] == [("oven-1", 90.0)]
    assert b.service.active_for(b.project, "oven-1") == a.service.active_for(a.project, "oven-1")

    b.judge("oven-1", 70.0, at=20)  # back inside on B clears what A raised
    a.judge("oven-1", 60.0, at=30)
    assert b.announced() == [("oven-1", "cleared", 70.0)]
    assert a.announced() == []
    assert a.service.active(a.project) == [] == b.service.active(b.project)

    # raised and cleared inside one batch: both announced, nothing left raised
    a.judge("oven-2", 81.0, 79.0, at=40)
    assert a.announced() == [("oven-2", "raised", 81.0), ("oven-2", "cleared", 79.0)]
    assert b.service.active(b.project) == []


def test_without_shared_states_each_replica_judges_alone(store: DuckDBStore) -> None:
    """The behaviour the shared states replace (and still the one of a single replica)."""
    a, b = _replicas(store, LocalAlarmStates)
    a.judge("oven-1", 90.0)
    b.judge("oven-1", 95.0, at=10)
    b.judge("oven-1", 70.0, at=20)
    assert a.announced() == [("oven-1", "raised", 90.0)]
    assert b.announced() == [("oven-1", "raised", 95.0), ("oven-1", "cleared", 70.0)]
    assert [x["value"] for x in a.service.active(a.project)] == [90.0], "A never learns"


def test_replicas_racing_on_the_same_breach_announce_it_once(
    redis_server: RedisServer, store: DuckDBStore
) -> None:
    a, b = _replicas(store, lambda: RedisAlarmStates(sync_client(redis_server.url)))
    devices = [f"oven-{i}" for i in range(40)]
    for device in devices:
        start = threading.Barrier(2)

        def judge(replica: Replica, value: float, device: str = device, start: Any = start) -> None:
            start.wait()
            replica.judge(device, value)

        threads = [threading.Thread(target=judge, args=(r, v)) for r, v in ((a, 90.0), (b, 91.0))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    announced = a.announced() + b.announced()
    assert sorted(d for d, state, _ in announced if state == "raised") == sorted(devices)
    assert len(announced) == len(devices)
    assert len(a.service.active(a.project)) == len(devices)


def test_redis_down_judges_per_replica_without_repeating(store: DuckDBStore) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    (a, _) = _replicas(store, lambda: RedisAlarmStates(sync_client(unreachable)))
    a.judge("oven-1", 90.0)
    a.judge("oven-1", 95.0, at=10)
    assert a.announced() == [("oven-1", "raised", 90.0)]
    assert [x["value"] for x in a.service.active(a.project)] == [90.0]
    a.judge("oven-1", 10.0, at=20)
    assert a.announced() == [("oven-1", "cleared", 10.0)]


def test_in_a_server_shared_states_are_judged_off_the_event_loop(
    redis_server: RedisServer, store: DuckDBStore
) -> None:
    """The listener hands batches to the service's own thread (Redis calls never block the
    loop) and publishes on the loop, in order."""
    a, _ = _replicas(store, lambda: RedisAlarmStates(sync_client(redis_server.url)))
    loop_thread: list[int] = []
    publish = a.bus.publish

    def recording_publish(project_id: str, channel: str, payload: Any) -> int:
        loop_thread.append(threading.get_ident())
        return publish(project_id, channel, payload)

    a.bus.publish = recording_publish  # type: ignore[method-assign]
    judged_in: list[int] = []
    apply = a.service.states.apply

    def recording_apply(transitions: Any) -> list[bool]:
        judged_in.append(threading.get_ident())
        return apply(transitions)

    a.service.states.apply = recording_apply  # type: ignore[method-assign]

    async def run() -> list[tuple[str, str, float]]:
        for n, value in enumerate((90.0, 92.0, 70.0, 85.0)):
            readings = [(0, Reading(device_id="oven-9", device_type="oven",
                                    metrics={"temperature": value},
                                    timestamp=T0 + timedelta(seconds=n)))]  # fmt: skip
            a.service(build_rows(a.project, readings, now=T0 + timedelta(hours=1))[0])
        await asyncio.to_thread(a.service.close)  # waits for every batch handed over
        await asyncio.sleep(0.05)  # the publications scheduled on the loop
        assert set(loop_thread) == {threading.get_ident()}
        assert len(judged_in) == 4 and threading.get_ident() not in judged_in
        return a.announced()

    assert asyncio.run(run()) == [
        ("oven-9", "raised", 90.0),
        ("oven-9", "cleared", 70.0),
        ("oven-9", "raised", 85.0),
    ]


def test_two_servers_agree_on_the_active_alarms(
    redis_server: RedisServer, make_server: Callable[..., Any]
) -> None:
    """Each replica with its own embedded store (the rules set on both), one Redis."""
    clients = [
        httpx.Client(
            base_url=make_server(AVILA_REDIS_URL=redis_server.url).url,
            headers={"x-api-key": TEST_KEY},
            timeout=30,
        )
        for _ in range(2)
    ]
    device = "press-" + uuid.uuid4().hex[:6]
    try:
        for c in clients:
            r = c.put(f"{I40}/alarms/rules/press", json={"rules": [{"metric": "force", "max": 5}]})
            assert r.status_code == 200, r.text

        def send(c: httpx.Client, value: float, second: int) -> None:
            ts = (T0 + timedelta(seconds=second)).isoformat().replace("+00:00", "Z")
            reading = {"device_id": device, "device_type": "press", "timestamp": ts,
                       "metrics": {"force": value}}  # fmt: skip
            assert c.post(f"{I40}/iot/ingest", json=reading).status_code == 202

        def active(c: httpx.Client) -> list[tuple[str, float]]:
            body = c.get(f"{I40}/alarms/active").json()
            return [(x["device_id"], x["value"]) for x in body["alarms"]]

        send(clients[0], 9.0, 0)
        wait_for(lambda: active(clients[1]) == [(device, 9.0)], timeout=10)
        send(clients[1], 1.0, 1)
        wait_for(lambda: active(clients[0]) == [], timeout=10)
    finally:
        for c in clients:
            c.close()
