"""Raised threshold alarms shared through Redis (``avila.shared.alarm_states``): a change of
severity judged on two replicas at once, and a Redis outage on one replica. Two
``AlarmService``s over one store and a real ``redis-server`` stand for two replicas."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis

from avila.industry40.alarms import AlarmRules
from avila.shared import sync_client
from avila.shared.alarm_states import AlarmStates, LocalAlarmStates, RedisAlarmStates
from avila.storage.duckdb.store import DuckDBStore
from tests.scaleout.conftest import RedisServer
from tests.scaleout.test_shared_alarm_states import Replica

TWO_LIMITS = [
    {"metric": "temperature", "max": 80.0, "severity": "warning"},
    {"metric": "temperature", "max": 100.0, "severity": "critical"},
]


def _pair(
    store: DuckDBStore, make_states: Callable[[], AlarmStates], rules: list[dict[str, Any]]
) -> tuple[Replica, Replica]:
    project = "alarms-" + uuid.uuid4().hex[:6]
    a, b = Replica(store, project, make_states()), Replica(store, project, make_states())
    a.service.set_rules(project, "oven", msgspec.convert({"rules": rules}, AlarmRules))
    b.service.load()
    return a, b


def _active(replica: Replica) -> list[tuple[str, float, str]]:
    return [
        (x["device_id"], x["value"], x["severity"]) for x in replica.service.active(replica.project)
    ]


def test_an_escalation_judged_on_two_replicas_at_once_is_announced_once(
    redis_server: RedisServer, store: DuckDBStore
) -> None:
    """Both replicas read the warning alarm, then both replace it with a critical one. Before:
    the replacement was an unconditional ``HDEL`` then ``HSETNX``, so the second replica
    deleted the first one's critical alarm, raised its own and announced "escalated" again."""
    a, b = _pair(store, lambda: RedisAlarmStates(sync_client(redis_server.url)), TWO_LIMITS)
    a.judge("oven-1", 90.0)
    apply = b.service.states.apply

    def after_a(transitions: Any) -> list[bool]:
        a.judge("oven-1", 120.0, at=10)  # between B's read and B's write
        return apply(transitions)

    b.service.states.apply = after_a  # type: ignore[method-assign]
    b.judge("oven-1", 110.0, at=11)
    assert a.announced() == [("oven-1", "raised", 90.0), ("oven-1", "escalated", 120.0)]
    assert b.announced() == []
    assert _active(a) == _active(b) == [("oven-1", 120.0, "critical")]


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_one_replica_announces_the_same_with_or_without_redis(
    redis_server: RedisServer, store: DuckDBStore, backend: str
) -> None:
    make: Callable[[], AlarmStates] = (
        LocalAlarmStates
        if backend == "local"
        else (lambda: RedisAlarmStates(sync_client(redis_server.url)))
    )
    a, _ = _pair(store, make, TWO_LIMITS)
    a.judge("oven-1", 90.0, 120.0, 110.0, 95.0, 85.0, 70.0, 130.0)
    a.judge("oven-2", 101.0, at=20)
    a.judge("oven-1", 60.0, at=30)
    assert [(d, s) for d, s, _ in a.announced()] == [
        ("oven-1", "raised"),
        ("oven-1", "escalated"),
        ("oven-1", "de-escalated"),
        ("oven-1", "cleared"),
        ("oven-1", "raised"),
        ("oven-2", "raised"),
        ("oven-1", "cleared"),
    ]
    assert _active(a) == [("oven-2", 101.0, "critical")]


def test_an_alarm_raised_while_redis_was_down_is_not_raised_again_after(
    own_redis: RedisServer, store: DuckDBStore
) -> None:
    """Before: the raise stayed in the replica's own copy; once Redis answered, the next
    reading in breach found nothing raised there and announced "raised" a second time, and
    the other replica never listed the alarm."""
    a, b = _pair(store, lambda: RedisAlarmStates(sync_client(own_redis.url)), TWO_LIMITS[:1])
    a.judge("oven-1", 70.0)
    own_redis.stop()
    a.judge("oven-1", 90.0, at=10)
    assert a.announced() == [("oven-1", "raised", 90.0)]
    own_redis.start()
    a.judge("oven-1", 95.0, at=20)
    assert a.announced() == []
    assert _active(b) == [("oven-1", 90.0, "warning")]
    b.judge("oven-1", 60.0, at=30)
    assert b.announced() == [("oven-1", "cleared", 60.0)]
    assert _active(a) == []


def test_an_alarm_cleared_while_redis_was_down_stays_cleared_after(
    own_redis: RedisServer, store: DuckDBStore
) -> None:
    """Redis keeps its data through the outage (saved, then loaded at its restart). Before:
    the clear stayed in the replica's own copy, so every replica still listed the alarm, the
    next reading in limits announced "cleared" a second time, and a reading in breach in
    between announced nothing (the alarm was still raised in Redis)."""
    a, b = _pair(store, lambda: RedisAlarmStates(sync_client(own_redis.url)), TWO_LIMITS[:1])
    a.judge("oven-1", 90.0)
    a.judge("oven-2", 91.0)
    assert len(a.announced()) == 2
    redis.Redis.from_url(own_redis.url).save()
    own_redis.stop()
    a.judge("oven-1", 70.0, at=10)
    a.judge("oven-2", 71.0, at=10)
    assert a.announced() == [("oven-1", "cleared", 70.0), ("oven-2", "cleared", 71.0)]
    own_redis.start()
    assert redis.Redis.from_url(own_redis.url).hlen("avila:alarms:" + a.project) == 2
    a.judge("oven-1", 60.0, at=20)
    a.judge("oven-2", 95.0, at=20)
    assert a.announced() == [("oven-2", "raised", 95.0)]
    assert _active(a) == _active(b) == [("oven-2", 95.0, "warning")]
