"""The rate limiter across the end of a window (avila.security.ratelimit): the weighted count
of the previous window is rounded up, so a key never gets one request more than its limit just
after a window ends, in process memory (the clock's minutes, driven here by a stand-in clock)
or in a real ``redis-server`` shared by replicas (windows that start with their first request;
time passed here by shortening the counters' time to live, which is Redis's clock for them).

The `limits` library's own sliding window counter rounds down: each test shows it letting the
request through that the limiter refuses."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import (
    SlidingWindowCounterRateLimiter as AsyncSlidingWindowCounterRateLimiter,
)
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from avila.security.ratelimit import RateDecision, RateLimiter
from tests.scaleout.conftest import RedisServer

MINUTE_START = 1_800_000_000.0  # a whole minute of the clock (30,000,000 * 60)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """``time.time`` as the `limits` memory storage and the limiter read it."""
    clock = Clock(MINUTE_START)
    monkeypatch.setattr(time, "time", clock)
    return clock


def _hit(limiter: RateLimiter, key: str) -> RateDecision:
    decision = limiter.hit(key)
    assert decision is not None
    return decision


def test_the_sixth_request_just_after_the_minute_turns_is_refused(clock: Clock) -> None:
    limiter = RateLimiter(5)
    old = SlidingWindowCounterRateLimiter(MemoryStorage())  # the library's strategy, as before
    item = RateLimitItemPerMinute(5)
    clock.now = MINUTE_START + 59.9
    firsts = [_hit(limiter, "k") for _ in range(5)]
    assert all(d.allowed for d in firsts)
    assert [d.remaining for d in firsts] == [4, 3, 2, 1, 0]
    assert all(old.hit(item, "k") for _ in range(5))
    assert not old.hit(item, "k") and not _hit(limiter, "k").allowed

    clock.now = MINUTE_START + 60.05  # the next minute, 0.15 s after the five
    sixth = _hit(limiter, "k")
    assert not sixth.allowed and sixth.remaining == 0
    # Before: 5 * 59.95 / 60 = 4.996 floored to 4, and the 6th went through.
    assert old.hit(item, "k")
    # The rule frees one request when 5 * share <= 4, share = 48/60: 11.95 s from now.
    assert sixth.reset_seconds == 12
    assert sixth.headers()["Retry-After"] == "12"

    clock.now = MINUTE_START + 60.05 + 11.9
    assert not _hit(limiter, "k").allowed
    clock.now = MINUTE_START + 60.05 + 12
    again = _hit(limiter, "k")
    assert again.allowed and again.remaining == 0


def test_remaining_counts_the_previous_minute_rounded_up(clock: Clock) -> None:
    limiter = RateLimiter(5)
    clock.now = MINUTE_START + 59.9
    assert [_hit(limiter, "k").remaining for _ in range(3)] == [4, 3, 2]
    clock.now = MINUTE_START + 60.05
    after = [_hit(limiter, "k") for _ in range(3)]
    assert [(d.allowed, d.remaining) for d in after] == [(True, 1), (True, 0), (False, 0)]
    # Half a minute on, 3 * 0.5 = 1.5 counts as 2: with the 2 of this minute, one is left.
    clock.now = MINUTE_START + 89.9
    assert [(d.allowed, d.remaining) for d in (_hit(limiter, "k"), _hit(limiter, "k"))] == [
        (True, 0),
        (False, 0),
    ]
    # Keys are counted apart. Reset: until the next request is freed; a request counts (as at
    # least 1, rounded up) until the end of the window after its own: 30.1 + 60 s.
    other = _hit(limiter, "other")
    assert (other.allowed, other.remaining, other.reset_seconds) == (True, 4, 91)


def test_a_full_budget_inside_one_minute_and_the_next_minute(clock: Clock) -> None:
    limiter = RateLimiter(3)
    clock.now = MINUTE_START + 10
    assert [_hit(limiter, "k").allowed for _ in range(4)] == [True, True, True, False]
    refused = _hit(limiter, "k")
    # The window ends in 50 s; then the three count 3 * share, down to 2 after 20 s more.
    assert refused.reset_seconds == 70
    clock.now = MINUTE_START + 79.9
    assert not _hit(limiter, "k").allowed
    clock.now = MINUTE_START + 80
    assert _hit(limiter, "k").allowed


# --- shared through Redis -------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _counters(client: redis.Redis, key_id: str) -> list[bytes]:
    names: list[bytes] = client.keys(f"*{key_id}*")  # type: ignore[assignment]
    return sorted(names)


def _let_pass(client: redis.Redis, key_id: str, seconds: float) -> None:
    """Time passing for one key's counters: their time to live, all Redis reckons with."""
    for name in _counters(client, key_id):
        left = client.pttl(name) - round(seconds * 1000)
        if left > 0:
            client.pexpire(name, left)
        else:
            client.delete(name)


def test_replicas_refuse_the_sixth_request_just_after_a_window_ends(
    redis_server: RedisServer,
) -> None:
    key_id = "window-" + uuid.uuid4().hex
    client = redis.Redis.from_url(redis_server.url)

    async def scenario() -> None:
        replicas = [RateLimiter(5, redis_server.url) for _ in range(2)]
        old_storage = AsyncRedisStorage(
            "async+" + redis_server.url, implementation="redispy", wrap_exceptions=True
        )
        old = AsyncSlidingWindowCounterRateLimiter(old_storage)  # a replica of before
        item = RateLimitItemPerMinute(5)
        try:
            firsts = [await replicas[i % 2].hit_async(key_id) for i in range(5)]
            assert [(d.allowed, d.remaining) for d in firsts if d] == [
                (True, 4),
                (True, 3),
                (True, 2),
                (True, 1),
                (True, 0),
            ]
            # One counter, the library's current window, with the library's value.
            (current,) = _counters(client, key_id)
            assert current.startswith(b"LIMITS:{") and int(client.get(current) or 0) == 5
            assert not await old.test(item, key_id)

            # The window started with the first request and ends 60 s later: 50 ms ago.
            _let_pass(client, key_id, 60.05)
            sixth = await replicas[1].hit_async(key_id)
            assert sixth is not None and not sixth.allowed and sixth.remaining == 0
            # 5 * 59.95 / 60 = 4.996: floored, the library lets the 6th request through.
            assert await old.test(item, key_id)
            assert sixth.reset_seconds == 12  # until 5 * share <= 4: 11.95 s
            assert sixth.headers()["Retry-After"] == "12"

            _let_pass(client, key_id, 11.5)
            early = await replicas[0].hit_async(key_id)
            assert early is not None and not early.allowed
            _let_pass(client, key_id, 0.5)
            again = await replicas[0].hit_async(key_id)
            assert again is not None and (again.allowed, again.remaining) == (True, 0)
            refused = await replicas[1].hit_async(key_id)
            assert refused is not None and not refused.allowed
        finally:
            bridge: Any = old_storage.bridge  # its redis.asyncio.Redis
            await bridge.storage.aclose()
            for replica in replicas:
                await replica.aclose()

    asyncio.run(scenario())


def test_replicas_racing_for_the_last_requests_let_through_the_limit_only(
    redis_server: RedisServer,
) -> None:
    key_id = "race-" + uuid.uuid4().hex
    client = redis.Redis.from_url(redis_server.url)

    async def scenario() -> list[RateDecision | None]:
        replicas = [RateLimiter(5, redis_server.url) for _ in range(2)]
        try:
            return list(
                await asyncio.gather(*(replicas[i % 2].hit_async(key_id) for i in range(30)))
            )
        finally:
            for replica in replicas:
                await replica.aclose()

    decisions = asyncio.run(scenario())
    assert sum(1 for d in decisions if d is not None and d.allowed) == 5
    assert all(d is not None and d.remaining >= 0 for d in decisions)
    # Each refused request that was counted in the race was given back.
    (current,) = _counters(client, key_id)
    assert int(client.get(current) or 0) == 5
