"""The live relay across replicas whose clocks disagree (real redis-server, real buses).

Which replica watches which project lives in the sorted set ``avila:live:interest``, scored
with expiry times. Scored with each replica's own clock, a replica 30 s ahead would drop the
others' entries as expired and never relay to them; scored with Redis's clock, the replicas
agree whatever their clocks say.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from avila.live import LiveBus
from avila.shared import async_client
from avila.shared.live import _INTEREST_TTL, INTEREST, RedisLiveBus, close_quietly
from tests.scaleout.conftest import RedisServer
from tests.waiting import until

SKEW_S = 30.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def _members_by_origin(url: str) -> dict[str, list[float]]:
    client = redis.Redis.from_url(url)
    try:
        found: dict[str, list[float]] = {}
        for member, score in client.zrange(INTEREST, 0, -1, withscores=True):
            origin = member.decode().split("\x1f", 1)[0]
            found.setdefault(origin, []).append(score)
        return found
    finally:
        client.close()


def _redis_now(url: str) -> float:
    client = redis.Redis.from_url(url)
    try:
        seconds, micros = client.time()
        return seconds + micros / 1e6
    finally:
        client.close()


def test_replicas_with_skewed_clocks_still_relay_to_each_other(redis_server: RedisServer) -> None:
    url = redis_server.url

    async def scenario() -> None:
        clients = [async_client(url), async_client(url)]
        ahead = RedisLiveBus(clients[0], clock=lambda: time.time() + SKEW_S)
        behind = RedisLiveBus(clients[1], clock=lambda: time.time() - SKEW_S)
        buses: list[LiveBus] = [ahead, behind]
        for bus in buses:
            bus.start()
        try:
            on_behind = behind.subscribe("p-behind", ["events"])
            on_ahead = ahead.subscribe("p-ahead", ["alerts"])
            # each replica learns that the other one watches a project
            await until(
                lambda: (
                    ahead.has_subscribers("p-behind", "events")
                    and behind.has_subscribers("p-ahead", "alerts")
                )
            )
            # and keeps knowing it past the entries' time to live (refreshed, never dropped)
            rounds_past_ttl = time.monotonic() + _INTEREST_TTL + 1.0
            while time.monotonic() < rounds_past_ttl:
                assert ahead.has_subscribers("p-behind", "events")
                assert behind.has_subscribers("p-ahead", "alerts")
                await asyncio.sleep(0.1)

            ahead.publish("p-behind", "events", {"n": 1})
            behind.publish("p-ahead", "alerts", {"n": 2})
            assert await asyncio.wait_for(on_behind.get(), 10) == ("events", {"n": 1})
            assert await asyncio.wait_for(on_ahead.get(), 10) == ("alerts", {"n": 2})

            # both replicas' entries are in Redis, expiring by Redis's clock
            entries = await asyncio.to_thread(_members_by_origin, url)
            assert set(entries) == {ahead.origin, behind.origin}
            now = await asyncio.to_thread(_redis_now, url)
            for scores in entries.values():
                for score in scores:
                    assert now <= score <= now + _INTEREST_TTL + 1.0
            # a replica knows how far its clock is from Redis's
            assert ahead.clock_skew == pytest.approx(SKEW_S, abs=2.0)
            assert behind.clock_skew == pytest.approx(-SKEW_S, abs=2.0)
        finally:
            for bus in buses:
                await bus.stop()
            for client in clients:
                await close_quietly(client)

    asyncio.run(scenario())
