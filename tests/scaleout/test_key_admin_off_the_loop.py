"""The keys admin routes (``/api/v1/keys``) never make a replica's event loop wait for Redis,
and a replica's shutdown closes every Redis client it opened. A real ``avila serve`` (or the
real app in process, to watch its connections) on a real ``redis-server`` frozen with SIGSTOP
(a hung Redis: connections accepted, nothing answered).

Before: list, create and revoke called Redis synchronously inside the async handlers, so with
Redis frozen each admin request held the whole loop for the client's timeout (2 s), one after
the other, and /health and every other request waited behind them. And the model registry's
own Redis client (``open_model_registry``) was never closed at shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import TestClient

from avila.app import create_app
from avila.config import Settings
from avila.errors import SharedStateUnavailable
from avila.shared import REDIS_TIMEOUT_SECONDS, sync_client
from avila.shared.keys import RedisKeyStore
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.scaleout.conftest import RedisServer
from tests.waiting import LoopTicks, until

#: Shorter than the Redis client's timeout: an answer within it did not wait for a frozen Redis.
QUICK = REDIS_TIMEOUT_SECONDS * 0.75
#: Generous: an admin request (or a shutdown) that took longer is stuck, not merely slow.
STUCK = 15.0
ADMIN = {"x-api-key": TEST_KEY}


def _admin(key_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Two lists, two creates and two revokes."""
    return [
        ("GET", "/api/v1/keys", {}),
        ("POST", "/api/v1/keys", {"json": {"scopes": ["read"], "name": "frozen"}}),
        ("DELETE", f"/api/v1/keys/{key_id}", {}),
        ("GET", "/api/v1/keys", {}),
        ("POST", "/api/v1/keys", {"json": {"scopes": ["ingest"]}}),
        ("DELETE", "/api/v1/keys/key_000000000000", {}),
    ]


def _send(port: int, method: str, path: str, body: Any = None) -> socket.socket:
    """One request written whole to the server (the answer is read later, see _answer)."""
    payload = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-api-key: {TEST_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
        "connection: close\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(head.encode() + payload)
    return sock


def _answer(sock: socket.socket) -> tuple[int, str]:
    """The status and error code of the answer on ``sock`` (0 and the failure: none came)."""
    with sock:
        raw = b""
        try:
            while chunk := sock.recv(65536):
                raw += chunk
        except OSError as exc:
            return 0, repr(exc)
    if not raw:
        return 0, "closed without an answer"
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body)["error"]["code"] if status >= 400 else ""


def _quick(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)
    except httpx.TimeoutException as exc:
        raise AssertionError(f"{method} {path} waited for the frozen Redis: {exc!r}") from None


def _admin_calls(url: str, key_id: str, answers: list[tuple[int, str, float]]) -> None:
    """Two lists, two creates and two revokes at once, each with its answer and time taken."""

    async def calls() -> None:
        async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=60) as client:

            async def one(method: str, path: str, **kwargs: Any) -> None:
                started = time.monotonic()
                response = await client.request(method, path, **kwargs)
                code = response.json()["error"]["code"] if response.status_code >= 400 else ""
                answers.append((response.status_code, code, time.monotonic() - started))

            await asyncio.gather(*(one(method, path, **kw) for method, path, kw in _admin(key_id)))

    asyncio.run(calls())


@pytest.fixture(scope="module")
def _replicas(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    """The replicas started for this module: the last one is reused while it runs."""
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def replica(
    _replicas: list[ServerProcess],
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> ServerProcess:
    """A replica (no rate limit) on the module's Redis, shared by the tests that freeze Redis;
    a new one after a test stopped it. Handed over once Redis answers through it again."""
    if not _replicas or _replicas[-1].proc is None or _replicas[-1].proc.poll() is not None:
        env = {"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0"}
        proc = ServerProcess(
            tmp_path_factory.mktemp("frozen-replica"),
            env={**env, "AVILA_REDIS_URL": redis_server.url},
        )
        _replicas.append(proc)
        proc.start()
    server = _replicas[-1]
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as client:
        asyncio.run(until(lambda: client.get("/api/v1/keys").status_code == 200, 30))
    return server


def test_key_admin_routes_with_redis_frozen_answer_503_and_stall_nobody(
    redis_server: RedisServer, replica: ServerProcess
) -> None:
    server, own_redis = replica, redis_server
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as patient:
        created = patient.post("/api/v1/keys", json={"scopes": ["read"], "name": "victim"})
        assert created.status_code == 201, created.text
        key_id = created.json()["key_id"]
        answers: list[tuple[int, str, float]] = []
        with own_redis.frozen(), httpx.Client(base_url=server.url, timeout=QUICK) as quick:
            admin = threading.Thread(target=_admin_calls, args=(server.url, key_id, answers))
            admin.start()
            try:
                for _ in range(8):
                    assert _quick(quick, "GET", "/health").status_code == 200
                    # A bootstrap key needs no Redis (no rate limit here): answered as usual.
                    assert _quick(quick, "GET", "/api/v1/me", headers=ADMIN).status_code == 200
                    threading.Event().wait(0.25)
            finally:
                admin.join()
        # Each admin request was refused by itself, in the project's error shape, in time.
        assert [(status, code) for status, code, _ in answers] == [
            (503, "shared_state_unavailable")
        ] * 6, answers
        assert max(took for _, _, took in answers) < STUCK, answers
        # Redis answers again: the admin routes work again by itself. (A command that reached
        # the frozen Redis may have run when it woke: the 503 said "not done, as far as known".)
        asyncio.run(until(lambda: patient.get("/api/v1/keys").status_code == 200, 30))
        listed = patient.get("/api/v1/keys").json()["keys"]
        assert key_id in {k["key_id"] for k in listed}
        again = patient.post("/api/v1/keys", json={"scopes": ["read"]})
        assert again.status_code == 201, again.text
        gone = patient.delete(f"/api/v1/keys/{again.json()['key_id']}")
        assert gone.status_code == 200, gone.text


def test_a_replica_stops_promptly_and_cleanly_while_redis_is_frozen(
    redis_server: RedisServer, replica: ServerProcess
) -> None:
    """Shutdown waits for no Redis call longer than its client's timeout, not once per thread
    that follows Redis (keys, alarm rules ...) nor per admin request in flight. Before: the
    twelve admin requests in flight held the loop 2 s each, one after the other (24 s), and
    the graceful shutdown waited for them."""
    server, own_redis = replica, redis_server
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as patient:
        created = patient.post("/api/v1/keys", json={"scopes": ["read"]})
        assert created.status_code == 201, created.text
        rules = {"rules": [{"metric": "temperature", "max": 80}]}
        put = patient.put("/api/v1/industry40/alarms/rules/oven", json=rules)
        assert put.status_code == 200, put.text
    with own_redis.frozen():
        threading.Event().wait(REDIS_TIMEOUT_SECONDS / 2)  # the followers' looks hang
        # Twelve admin requests written whole to the server before it is told to stop.
        sent = [
            _send(server.port, method, path, kw.get("json"))
            for _ in range(2)
            for method, path, kw in _admin(created.json()["key_id"])
        ]
        threading.Event().wait(0.5)  # the server reads them (its loop is free)
        started = time.monotonic()
        code = server.stop(timeout=60)
        took = time.monotonic() - started
        answers = [_answer(sock) for sock in sent]
    assert code == 0, server.log()[-3000:]
    assert took < STUCK, f"the replica took {took:.1f} s to stop"
    # The requests in flight were answered before the replica went away.
    assert answers == [(503, "shared_state_unavailable")] * 12, answers


def test_shutdown_closes_every_redis_connection_the_replica_opened(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """The real app in this process (its connections outlive a process only in process)."""
    watcher = redis.Redis.from_url(own_redis.url)

    def connections() -> set[int]:
        return {int(c["id"]) for c in watcher.client_list()}

    settings = Settings.from_env(
        environ={
            "AVILA_DATA_DIR": str(tmp_path / "data"),
            "AVILA_REDIS_URL": own_redis.url,
            "API_KEYS": TEST_KEY,
            "RATE_LIMIT_PER_MINUTE": "100",
        },
        env_file=None,
    )
    try:
        before = connections()
        app = create_app(settings)
        with TestClient(app) as client:
            key = client.post("/api/v1/keys", json={"scopes": ["read"]}, headers=ADMIN)
            assert key.status_code == 201, key.text
            assert client.get("/api/v1/keys", headers=ADMIN).status_code == 200
            runs = client.get("/api/v1/ml/models", headers=ADMIN)  # the model registry's client
            assert runs.status_code == 200, runs.text
            unknown = client.get("/api/v1/me", headers={"x-api-key": "ak_" + uuid.uuid4().hex})
            assert unknown.status_code == 401
            opened = connections() - before
            assert opened
        asyncio.run(until(lambda: not (connections() & opened), timeout=10))
        assert app is not None  # the app (and any client it forgot) is still alive here
    finally:
        watcher.close()


def test_the_key_stores_admin_calls_never_wait_on_the_loop_for_a_frozen_redis(
    own_redis: RedisServer,
) -> None:
    """The registry's own async admin calls: the loop keeps turning while they wait for Redis,
    each ends in 503 by itself, and they work again once Redis answers."""
    keys = RedisKeyStore(sync_client(own_redis.url), (TEST_KEY,))

    async def scenario() -> None:
        secret, info = await keys.create_async("p", ["read"], "admin")
        assert [k.key_id for k in await keys.list_async("p")] == [info.key_id]
        async with LoopTicks() as ticks:
            with own_redis.frozen():
                calls = [keys.list_async("p") for _ in range(3)]
                calls += [keys.create_async("p", ["read"]) for _ in range(3)]
                calls += [keys.revoke_async(info.key_id, "p") for _ in range(3)]
                before = ticks.count
                started = time.monotonic()
                results = await asyncio.gather(*calls, return_exceptions=True)
                took = time.monotonic() - started
                assert ticks.count - before > 10, "the loop stood still"
        assert all(isinstance(r, SharedStateUnavailable) for r in results), results
        assert took < STUCK
        # Redis answers again: so do the admin calls. (A command that reached the frozen Redis
        # may have run when it woke: the revoke may be done already, a key created.)
        deadline = time.monotonic() + 30
        while True:
            try:
                listed = await keys.list_async("p")
                break
            except SharedStateUnavailable:
                assert time.monotonic() < deadline, "the admin calls did not recover"
                await asyncio.sleep(0.1)
        assert info.key_id in {k.key_id for k in listed}
        await keys.revoke_async(info.key_id, "p")
        revoked = [k.revoked_at for k in await keys.list_async("p") if k.key_id == info.key_id]
        assert revoked != [None], revoked
        await until(lambda: keys.resolve(secret) is None, timeout=10)
        keys.close()
        with pytest.raises(SharedStateUnavailable):
            await keys.list_async("p")

    try:
        asyncio.run(scenario())
    finally:
        keys.close()
