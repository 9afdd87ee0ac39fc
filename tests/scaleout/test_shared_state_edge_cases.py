"""Edge cases of the state replicas share through Redis (docs/shared-state.md), each on real
``avila serve`` replicas and a real ``redis-server``: overlapping batches racing for claims,
a crashed replica's claim, odd event ids as Redis keys, the rate limit over a Unix socket,
and URLs with a password, a database number or a typo."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from avila.ingest.idempotency import event_key
from avila.shared.claims import PENDING_MS
from avila.shared.claims import PREFIX as CLAIM_PREFIX
from avila.testing import ServerProcess, free_port
from tests.conftest import TEST_KEY
from tests.scaleout.conftest import RedisServer, start_all


def _event(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": "edge-user",
        "timestamp": "2026-11-30T10:00:00Z",
        "event_type": {"type": "PageView", "data": {"url": "/edge"}},
    }


def _batch(server: ServerProcess, events: list[dict[str, Any]]) -> tuple[int, int]:
    response = httpx.post(
        server.url + "/api/v1/events/batch",
        json={"events": events},
        headers={"x-api-key": TEST_KEY},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    return body["accepted"], body["duplicates"]


def _claim_name(event_id: str) -> str:
    return CLAIM_PREFIX + event_key("default", event_id)


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    # No rate limit: the only scripts these replicas run in Redis are event claims.
    env = {"API_KEYS": TEST_KEY, "AVILA_REDIS_URL": redis_server.url, "RATE_LIMIT_PER_MINUTE": "0"}
    root = tmp_path_factory.mktemp("edge-pair")
    servers = [ServerProcess(root / f"replica{i}", env=env) for i in (1, 2)]
    try:
        start_all(servers)
        yield servers
    finally:
        for server in servers:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.send_signal(signal.SIGCONT)
            server.stop()


def _claim_scripts(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_overlapping_batches_waiting_on_a_crashed_claim_store_each_event_once(
    pair: list[ServerProcess], redis_server: RedisServer
) -> None:
    """Replica A gets [a, b] while b is still claimed by a replica that crashed; replica B
    gets [b, a]. Before: A took a and waited for b; B took b once the crashed claim expired
    and waited for a: each waited for the other until A's claim on a expired, then both
    stored a (two 202s counting it as accepted). A batch now takes all its keys or none."""
    r1, r2 = pair
    client = redis.Redis.from_url(redis_server.url)
    a, b = "ovl-a-" + uuid.uuid4().hex, "ovl-b-" + uuid.uuid4().hex
    # The replica that claimed b died before writing it: its claim expires by itself.
    client.set(_claim_name(b), b"p:crashed", px=2000)
    bodies: dict[str, tuple[int, int]] = {}

    def send(name: str, server: ServerProcess, ids: list[str]) -> None:
        bodies[name] = _batch(server, [_event(i) for i in ids])

    assert r1.proc is not None
    first = threading.Thread(target=send, args=("r1", r1, [a, b]))
    before = _claim_scripts(client)
    first.start()
    try:
        # Replica 1 is polling for b. It then stalls (a GC pause, a starved CPU) while the
        # crashed claim expires and replica 2 gets the same events in the other order.
        _wait_for(lambda: _claim_scripts(client) >= before + 3, "replica 1 never claimed")
        r1.proc.send_signal(signal.SIGSTOP)
        second = threading.Thread(target=send, args=("r2", r2, [b, a]))
        second.start()
        _wait_for(
            lambda: client.get(_claim_name(b)) not in (None, b"p:crashed"),
            "replica 2 never claimed b",
        )
    finally:
        r1.proc.send_signal(signal.SIGCONT)
    first.join(60)
    second.join(60)
    assert sorted(bodies.values()) == [(0, 2), (2, 0)], bodies


def test_a_crashed_replicas_claim_expires_and_the_retry_is_stored(
    pair: list[ServerProcess], redis_server: RedisServer
) -> None:
    _, r2 = pair
    client = redis.Redis.from_url(redis_server.url)
    event_id = "crash-" + uuid.uuid4().hex
    client.set(_claim_name(event_id), b"p:crashed", px=PENDING_MS)
    client.pexpire(_claim_name(event_id), 1500)  # the crash happened 13.5 s ago
    assert _batch(r2, [_event(event_id)]) == (1, 0)
    assert client.get(_claim_name(event_id)) == b"d"
    assert _batch(r2, [_event(event_id)]) == (0, 1)


@pytest.mark.parametrize(
    "event_id",
    ["a:b:c", "ev*[?]\\x", "olá-🌍-事件", "e" * 256, "p\x1fq", "avila:ev:default"],
    ids=["colons", "glob", "unicode", "256", "separator", "prefix-like"],
)
def test_odd_event_ids_are_duplicates_across_replicas(
    pair: list[ServerProcess], redis_server: RedisServer, event_id: str
) -> None:
    r1, r2 = pair
    unique = (event_id + "-" + uuid.uuid4().hex[:8])[-256:]  # new each run, at most 256
    response = httpx.post(
        r1.url + "/api/v1/events",
        json={"event": _event(unique)},
        headers={"x-api-key": TEST_KEY},
        timeout=30,
    )
    if response.status_code == 422:  # refused by validation: nothing to share
        return
    assert response.json()["accepted"] == 1, response.text
    assert _batch(r2, [_event(unique), _event("+" + unique[1:])]) == (1, 1)
    client = redis.Redis.from_url(redis_server.url)
    assert client.get(_claim_name(unique)) == b"d"


def _start_redis(args: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is missing (.ci/run installs it)"
    with open(workdir / "redis.log", "ab") as log:
        return subprocess.Popen(
            [binary, "--save", "", "--appendonly", "no", "--dir", str(workdir), *args],
            stdout=log,
            stderr=log,
        )


def _wait_redis(url: str, proc: subprocess.Popen[bytes]) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)


def _hits(servers: list[ServerProcess], count: int) -> list[httpx.Response]:
    responses = []
    for i in range(count):
        server = servers[i % len(servers)]
        responses.append(
            httpx.get(server.url + "/api/v1/me", headers={"x-api-key": TEST_KEY}, timeout=30)
        )
    return responses


def test_replicas_on_a_unix_socket_share_one_rate_limit(tmp_path: Path) -> None:
    """``unix://`` passes the settings check and the Redis clients, but the rate limiter's
    storage (`limits`) knows it as ``redis+unix://``: the replica did not start."""
    workdir = Path(tempfile.mkdtemp(prefix="avr", dir="/tmp"))  # socket paths stay short
    socket_path = workdir / "redis.sock"
    proc = _start_redis(
        ["--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"], workdir
    )
    url = f"unix://{socket_path}?db=2"
    servers: list[ServerProcess] = []
    try:
        _wait_redis(url, proc)
        env = {"API_KEYS": TEST_KEY, "AVILA_REDIS_URL": url, "RATE_LIMIT_PER_MINUTE": "5"}
        servers = [ServerProcess(tmp_path / f"replica{i}", env=env) for i in (1, 2)]
        start_all(servers)
        responses = _hits(servers, 6)
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        assert [r.headers["RateLimit-Remaining"] for r in responses] == list("432100")
        refused = responses[-1]
        assert int(refused.headers["Retry-After"]) >= 1
        # The other replica refuses too, with the same budget figures.
        again = _hits(servers[1:], 1)[0]
        assert again.status_code == 429
        assert again.headers["RateLimit-Limit"] == refused.headers["RateLimit-Limit"] == "5"
        assert again.headers["RateLimit-Remaining"] == "0"
        assert redis.Redis.from_url(url).dbsize() > 0  # in database 2, as the URL says
    finally:
        for server in servers:
            server.stop()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_password_and_database_in_the_url_are_used_by_every_replica(tmp_path: Path) -> None:
    port = free_port()
    proc = _start_redis(
        ["--port", str(port), "--bind", "127.0.0.1", "--requirepass", "s3cr:et@"], tmp_path
    )
    url = f"redis://:s3cr%3Aet%40@127.0.0.1:{port}/3"
    servers: list[ServerProcess] = []
    try:
        _wait_redis(url, proc)
        env = {"API_KEYS": TEST_KEY, "AVILA_REDIS_URL": url, "RATE_LIMIT_PER_MINUTE": "100"}
        servers = [ServerProcess(tmp_path / f"replica{i}", env=env) for i in (1, 2)]
        start_all(servers)
        event_id = "pw-" + uuid.uuid4().hex
        assert _batch(servers[0], [_event(event_id)]) == (1, 0)
        assert _batch(servers[1], [_event(event_id)]) == (0, 1)
        db3 = redis.Redis(port=port, password="s3cr:et@", db=3)
        db0 = redis.Redis(port=port, password="s3cr:et@", db=0)
        assert db3.get(_claim_name(event_id)) == b"d"
        assert db0.dbsize() == 0
    finally:
        for server in servers:
            server.stop()
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:{port}/1O", "database must be a number"),
        ("redis://127.0.0.1:{port}/abc", "database must be a number"),
        # The settings check (avila.config) may catch these first: any clear message will do.
        ("redis://127.0.0.1:63x9/0", ""),
        ("redis:/127.0.0.1:{port}", ""),
        ("redis://:hunter2@/0", ""),
    ],
    ids=["db-letter-o", "db-word", "port", "one-slash", "no-host"],
)
def test_a_redis_url_with_a_typo_is_a_clear_startup_error(
    redis_server: RedisServer, tmp_path: Path, url: str, says: str
) -> None:
    """Before: a database typo silently used database 0 (sharing nothing with the replicas
    whose URL is right) and the others ended in a traceback."""
    env = {
        **os.environ,
        "API_KEYS": TEST_KEY,
        "AVILA_DATA_DIR": str(tmp_path),
        "AVILA_REDIS_URL": url.format(port=redis_server.port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "avila.cli", "serve", "--host", "127.0.0.1", "--port",
         str(free_port())],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the replica started with a mistyped AVILA_REDIS_URL")
    text = err.decode(errors="replace")
    assert proc.returncode == 2, text
    assert "AVILA_REDIS_URL" in text and says in text, text
    assert "Traceback" not in text
    assert "hunter2" not in text
