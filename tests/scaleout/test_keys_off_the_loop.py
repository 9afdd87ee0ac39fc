"""Checking an API key never makes a replica's event loop wait for Redis. A real ``avila serve``
on a real ``redis-server`` frozen with SIGSTOP (a hung Redis: connections accepted, nothing
answered), and key stores of two "replicas" on one real Redis.

Before: a stored key's lookup read the version (a blocking Redis GET) on the event loop every
0.5 s, an unknown key's every 0.05 s; with Redis frozen each such request held the whole loop
for the client's timeout (and its retries), and a failed look was retried by the very next
request, so /health and bootstrap keys stalled with it."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from avila.config import Settings
from avila.errors import SharedStateUnavailable
from avila.shared import REDIS_TIMEOUT_SECONDS, open_shared, sync_client
from avila.shared.keys import MISS_WAIT_SECONDS, STALE_SECONDS, RedisKeyStore
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY, server_for
from tests.scaleout.conftest import RedisServer
from tests.waiting import LoopTicks, until

#: Shorter than the Redis client's timeout: an answer within it did not wait for a frozen Redis.
QUICK = REDIS_TIMEOUT_SECONDS * 0.75


def _quick(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)
    except httpx.TimeoutException as exc:
        raise AssertionError(f"{method} {path} waited for the frozen Redis: {exc!r}") from None


def _event() -> dict[str, Any]:
    return {
        "event_id": "frozen-" + uuid.uuid4().hex,
        "user_id": "frozen-user",
        "timestamp": "2026-11-30T10:00:00Z",
        "event_type": {"type": "PageView", "data": {"url": "/frozen"}},
    }


@pytest.fixture(scope="module")
def _replica(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    yield from server_for(tmp_path_factory, "frozen-replica", AVILA_REDIS_URL=redis_server.url)


@pytest.fixture
def replica(_replica: ServerProcess) -> ServerProcess:
    """One replica (no rate limit) on the module's Redis for the tests that freeze it, handed
    over once Redis answers through it again (after the freeze of a previous test)."""
    with httpx.Client(base_url=_replica.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
        asyncio.run(until(lambda: c.get("/api/v1/keys").status_code == 200, 30))
    return _replica


def test_a_stored_key_with_redis_frozen_is_a_quick_503_and_stalls_nobody(
    redis_server: RedisServer, replica: ServerProcess
) -> None:
    server, own_redis = replica, redis_server
    admin = {"x-api-key": TEST_KEY}
    with (
        httpx.Client(base_url=server.url, timeout=30) as patient,
        httpx.Client(base_url=server.url, timeout=QUICK) as quick,
    ):
        created = patient.post("/api/v1/keys", json={"scopes": ["read", "ingest"]}, headers=admin)
        assert created.status_code == 201, created.text
        stored = {"x-api-key": created.json()["key"]}
        assert patient.get("/api/v1/me", headers=stored).status_code == 200
        with own_redis.frozen():
            threading.Event().wait(STALE_SECONDS + 0.3)  # past the revocation guarantee
            for _ in range(3):
                me = _quick(quick, "GET", "/api/v1/me", headers=stored)
                assert me.status_code == 503, me.text
                assert me.json()["error"]["code"] == "shared_state_unavailable"
                # The event-ingest hot path (its own key lookup) answers the same.
                event = _quick(quick, "POST", "/api/v1/events", json={"event": _event()},
                               headers=stored)  # fmt: skip
                assert event.status_code == 503, event.text
                assert event.json()["error"]["code"] == "shared_state_unavailable"
                assert _quick(quick, "GET", "/health").status_code == 200
                assert _quick(quick, "GET", "/api/v1/me", headers=admin).status_code == 200
        # Redis answers again: the stored key works again by itself.
        asyncio.run(until(lambda: patient.get("/api/v1/me", headers=stored).status_code == 200, 30))


def test_a_flood_of_unknown_keys_while_redis_freezes_stalls_nobody(
    redis_server: RedisServer, replica: ServerProcess
) -> None:
    """Unknown keys ask for a fresh look at Redis (a key created on another replica works at
    once): with Redis just frozen those looks hang, but off the loop and shared."""
    server, own_redis = replica, redis_server
    admin = {"x-api-key": TEST_KEY}
    with httpx.Client(base_url=server.url, timeout=30) as patient:
        created = patient.post("/api/v1/keys", json={"scopes": ["read"]}, headers=admin)
        stored = {"x-api-key": created.json()["key"]}
        assert patient.get("/api/v1/me", headers=stored).status_code == 200
    answers: list[int] = []

    async def flood() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def guess() -> None:
                headers = {"x-api-key": "ak_" + uuid.uuid4().hex}
                answers.append((await client.get("/api/v1/me", headers=headers)).status_code)

            await asyncio.gather(*(guess() for _ in range(60)))

    with (
        own_redis.frozen(),
        httpx.Client(base_url=server.url, timeout=QUICK) as quick,
    ):
        flooding = threading.Thread(target=asyncio.run, args=(flood(),))
        flooding.start()
        try:
            for _ in range(5):
                assert _quick(quick, "GET", "/health").status_code == 200
                assert _quick(quick, "GET", "/api/v1/me", headers=admin).status_code == 200
                threading.Event().wait(0.1)
        finally:
            flooding.join()
    # Unknown keys are refused (401), or 503 once Redis did not answer: never let through.
    assert len(answers) == 60
    assert set(answers) <= {401, 503}, answers


# -- two replicas' key stores on one real Redis ------------------------------------------------


@pytest.fixture
def replicas(own_redis: RedisServer) -> Iterator[tuple[RedisKeyStore, RedisKeyStore]]:
    a = RedisKeyStore(sync_client(own_redis.url), (TEST_KEY,))
    b = RedisKeyStore(sync_client(own_redis.url), (TEST_KEY,))
    yield a, b
    for store in (a, b):
        store.close()


def test_a_key_created_on_one_replica_works_on_the_other_at_once(
    replicas: tuple[RedisKeyStore, RedisKeyStore],
) -> None:
    a, b = replicas

    async def scenario() -> None:
        assert await b.resolve_async("ak_unknown-" + uuid.uuid4().hex) is None  # b follows
        for _ in range(5):
            secret, info = a.create("p", ["read"])
            found = await b.resolve_async(secret)
            assert found is not None and found.key_id == info.key_id

    asyncio.run(scenario())


def test_a_revoke_on_one_replica_is_refused_at_once_there_and_within_1s_on_the_other(
    replicas: tuple[RedisKeyStore, RedisKeyStore],
) -> None:
    a, b = replicas

    async def scenario() -> None:
        secret, info = a.create("p", ["read"])
        assert await a.resolve_async(secret) is not None
        assert await b.resolve_async(secret) is not None
        assert a.revoke(info.key_id)
        revoked_at = asyncio.get_running_loop().time()
        assert await a.resolve_async(secret) is None
        await asyncio.sleep(
            max(0.0, revoked_at + STALE_SECONDS - asyncio.get_running_loop().time())
        )
        assert await b.resolve_async(secret) is None
        assert b.resolve(secret) is None  # the blocking lookup (CLI) agrees

    asyncio.run(scenario())


def test_the_async_lookup_never_waits_on_the_loop_for_a_frozen_redis(
    own_redis: RedisServer, replicas: tuple[RedisKeyStore, RedisKeyStore]
) -> None:
    """The loop keeps turning while lookups wait for Redis: a stored key is a 503 once the
    list is stale, an unknown key a 503 when the look it waits for does not come."""
    a, _ = replicas

    async def scenario() -> None:
        secret, _info = a.create("p", ["read"])
        assert await a.resolve_async(secret) is not None
        async with LoopTicks() as ticks:
            with own_redis.frozen():
                with pytest.raises(SharedStateUnavailable):  # waits, but off the loop
                    await asyncio.wait_for(a.resolve_async("ak_unknown"), QUICK)
                before = ticks.count
                await asyncio.sleep(0.05)
                assert ticks.count > before, "the loop stood still"
                await asyncio.sleep(STALE_SECONDS)
                with pytest.raises(SharedStateUnavailable):
                    await asyncio.wait_for(a.resolve_async(secret), QUICK)
                assert await a.resolve_async(TEST_KEY) is not None  # bootstrap: no Redis
        await until(lambda: a.resolve(secret) is not None, timeout=30)

    asyncio.run(scenario())
    assert MISS_WAIT_SECONDS < QUICK


def test_close_ends_the_key_follower_and_the_rate_limiters_connections(
    own_redis: RedisServer,
) -> None:
    """Before: the rate limiter's Redis connections stayed open after ``SharedState.close``."""
    watcher = redis.Redis.from_url(own_redis.url)

    def connections() -> set[int]:
        return {int(c["id"]) for c in watcher.client_list()}

    settings = Settings.from_env(
        environ={
            "AVILA_REDIS_URL": own_redis.url,
            "API_KEYS": TEST_KEY,
            "RATE_LIMIT_PER_MINUTE": "100",
        },
        env_file=None,
    )

    def followers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "avila-keys-follower"]

    async def scenario() -> None:
        before = connections()
        shared = open_shared(settings)
        shared.keys.start()
        assert await shared.keys.resolve_async("ak_unknown-" + uuid.uuid4().hex) is None
        assert await shared.rate_limiter.hit_async("close-test") is not None
        opened = connections() - before
        assert followers()
        await shared.close()
        await until(lambda: not (connections() & opened))
        assert not followers()

    try:
        asyncio.run(scenario())
    finally:
        watcher.close()


def test_rate_limits_counted_in_a_frozen_redis_stall_nobody(
    own_redis: RedisServer, make_server: Callable[..., Any]
) -> None:
    """Before: each keyed request was counted against its limit with blocking Redis calls
    (1 s timeout each) on the event loop, so with Redis frozen concurrent keyed requests held
    the loop one after the other and /health waited behind them. Now the count is awaited:
    each keyed request answers 503 by itself, nobody else waits."""
    server = make_server(AVILA_REDIS_URL=own_redis.url, RATE_LIMIT_PER_MINUTE="1000")
    admin = {"x-api-key": TEST_KEY}
    with httpx.Client(base_url=server.url, timeout=30) as patient:
        first = patient.get("/api/v1/me", headers=admin)
        assert first.status_code == 200, first.text
        assert first.headers["ratelimit-limit"] == "1000"
        answers: list[tuple[int, str]] = []

        async def keyed() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

                async def one(i: int) -> None:
                    if i % 2:
                        response = await client.get("/api/v1/me", headers=admin)
                    else:  # the event-ingest hot path counts with the same limiter
                        response = await client.post(
                            "/api/v1/events", json={"event": _event()}, headers=admin
                        )
                    code = response.json()["error"]["code"] if response.status_code >= 400 else ""
                    answers.append((response.status_code, code))

                await asyncio.gather(*(one(i) for i in range(8)))

        with own_redis.frozen(), httpx.Client(base_url=server.url, timeout=QUICK) as quick:
            counting = threading.Thread(target=asyncio.run, args=(keyed(),))
            counting.start()
            try:
                for _ in range(6):
                    assert _quick(quick, "GET", "/health").status_code == 200
                    threading.Event().wait(0.2)
            finally:
                counting.join()
        # A limit nobody can count is not lifted: every keyed request was refused, by itself.
        assert answers == [(503, "shared_state_unavailable")] * 8, answers
        # Redis answers again: requests are counted again.
        asyncio.run(until(lambda: patient.get("/api/v1/me", headers=admin).status_code == 200, 30))
        again = patient.get("/api/v1/me", headers=admin)
        assert int(again.headers["ratelimit-remaining"]) < 1000
