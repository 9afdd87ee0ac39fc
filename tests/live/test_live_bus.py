"""The live bus and activity counters, checked against plain-Python oracles."""

from __future__ import annotations

import asyncio
import random

from avila.live import ActivityTracker, LiveBus


def test_queue_keeps_the_newest_and_counts_drops() -> None:
    bus = LiveBus()
    sub = bus.subscribe("p", ["events"], maxsize=5)
    sent: list[int] = []
    rng = random.Random(7)
    for start in range(0, 200, 10):
        items = list(range(start, start + rng.randint(0, 10)))
        sent.extend(items)
        bus.publish_many("p", "events", items)
        if rng.random() < 0.3:
            bus.publish("p", "events", -start)
            sent.append(-start)
    got = []
    while (message := sub.get_nowait()) is not None:
        got.append(message[1])
    assert got == sent[-5:]
    assert sub.dropped == len(sent) - 5
    assert sub.pending() == 0


def test_publish_reaches_only_the_project_and_channel() -> None:
    bus = LiveBus()
    a = bus.subscribe("a", ["events"])
    b = bus.subscribe("b", ["events", "alerts"])
    assert bus.publish("a", "alerts", {"x": 1}) == 0
    assert bus.publish("b", "alerts", {"x": 2}) == 1
    assert bus.publish_many("a", "events", [1, 2]) == 1
    assert a.get_nowait() == ("events", 1)
    assert b.get_nowait() == ("alerts", {"x": 2})
    assert b.get_nowait() is None
    assert bus.has_subscribers("a", "events") and not bus.has_subscribers("a", "alerts")
    assert bus.projects("events") == {"a", "b"}


def test_unsubscribe_forgets_queued_messages_of_that_channel() -> None:
    bus = LiveBus()
    sub = bus.subscribe("p", ["events", "metrics"])
    bus.publish_many("p", "events", [1, 2, 3])
    bus.publish("p", "metrics", {"m": 1})
    bus.set_channels(sub, ["metrics"])
    assert sub.get_nowait() == ("metrics", {"m": 1})
    assert sub.get_nowait() is None
    assert bus.publish("p", "events", 4) == 0
    bus.unsubscribe(sub)
    assert len(bus) == 0 and not bus.has_subscribers()


def test_get_waits_for_a_message() -> None:
    async def scenario() -> tuple[str, object]:
        bus = LiveBus()
        sub = bus.subscribe("p", ["alerts"])
        waiter = asyncio.ensure_future(sub.get())
        await asyncio.sleep(0)
        assert not waiter.done()
        bus.publish("p", "alerts", "fire")
        return await asyncio.wait_for(waiter, 1)

    assert asyncio.run(scenario()) == ("alerts", "fire")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_activity_matches_an_oracle() -> None:
    clock = Clock()
    tracker = ActivityTracker(clock)
    rng = random.Random(3)
    log: list[tuple[int, str]] = []  # (second, user) per event
    for _ in range(900):
        clock.now += rng.choice([0.0, 0.2, 0.5, 1.0, 3.0])
        users = [f"u{rng.randint(0, 300)}" for _ in range(rng.randint(1, 4))]
        tracker.record("p", users, len(users))
        log.extend((int(clock.now), u) for u in users)
        if rng.random() < 0.05:
            now = int(clock.now)
            snap = tracker.snapshot("p")
            assert snap["events_last_second"] == sum(1 for s, _ in log if s == now - 1)
            assert snap["events_last_minute"] == sum(1 for s, _ in log if 1 <= now - s <= 60)
            assert snap["events_per_second"] == sum(1 for s, _ in log if 1 <= now - s <= 10) / 10
            bucket = now // 15
            assert snap["active_users"] == len({u for s, u in log if s // 15 > bucket - 20})
    assert tracker.snapshot("other")["active_users"] == 0
    clock.now += 301
    tracker.prune()
    assert len(tracker) == 0
