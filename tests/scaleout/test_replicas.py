"""Three ``avila serve`` replicas sharing one real ``redis-server`` (``AVILA_REDIS_URL``).

Each replica has its own data directory and embedded store. The issue allows this: no
ClickHouse server can run on this machine (Debian's is too old for clickhouse-connect, and
chdb admits one process per path), so the store is the one thing the replicas here do not
share. Everything the replicas share through Redis is exercised across processes: idempotency,
rate limits, the live bus and API keys; and a kill -9 of one replica loses nothing it
acknowledged.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avila.shared import sync_client
from avila.shared.keys import RedisKeyStore
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.live.ws_client import barrier, collect_events, events_of, open_ws, subscribe
from tests.scaleout.conftest import RedisServer, start_all

RATE_LIMIT = 60


def _env(redis_url: str) -> dict[str, str]:
    return {
        "API_KEYS": TEST_KEY,
        "AVILA_REDIS_URL": redis_url,
        "RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT),
        "AVILA_LIVE_FLUSH_MS": "50",
    }


@pytest.fixture(scope="module")
def replicas(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    root = tmp_path_factory.mktemp("replicas")
    servers = [ServerProcess(root / f"replica{i}", env=_env(redis_server.url)) for i in (1, 2, 3)]
    try:
        start_all(servers)
        yield servers
    finally:
        for server in servers:
            server.stop()


def _event(event_id: str, user: str = "scale-user") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user,
        "timestamp": "2026-11-30T10:00:00Z",
        "event_type": {"type": "PageView", "data": {"url": "/scale", "title": "Olá 🌍"}},
    }


def _post(server: ServerProcess, event: dict[str, Any], key: str = TEST_KEY) -> dict[str, Any]:
    response = httpx.post(
        server.url + "/api/v1/events", json={"event": event}, headers={"x-api-key": key}, timeout=30
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def _batch(server: ServerProcess, events: list[dict[str, Any]], key: str = TEST_KEY) -> Any:
    response = httpx.post(
        server.url + "/api/v1/events/batch",
        json={"events": events},
        headers={"x-api-key": key},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response.json()


def _new_key(server: ServerProcess, scopes: list[str]) -> tuple[str, str]:
    response = httpx.post(
        server.url + "/api/v1/keys",
        json={"scopes": scopes, "name": "scale-" + uuid.uuid4().hex[:6]},
        headers={"x-api-key": TEST_KEY},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["key"], body["key_id"]


def _me(server: ServerProcess, key: str) -> httpx.Response:
    return httpx.get(server.url + "/api/v1/me", headers={"x-api-key": key}, timeout=30)


def test_an_event_id_sent_to_one_replica_is_a_duplicate_on_another(
    replicas: list[ServerProcess],
) -> None:
    r1, r2, r3 = replicas
    first, second = "dup-" + uuid.uuid4().hex, "dup-" + uuid.uuid4().hex
    body = _post(r1, _event(first))
    assert (body["accepted"], body["duplicates"]) == (1, 0)
    assert _post(r2, _event(first))["duplicates"] == 1
    body = _batch(r3, [_event(first), _event(second)])
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert _post(r1, _event(second))["duplicates"] == 1


def _race(
    server: ServerProcess,
    event: dict[str, Any],
    start: threading.Barrier,
    bodies: list[dict[str, Any]],
) -> None:
    start.wait()
    bodies.append(_post(server, event))


def test_the_same_new_event_raced_to_three_replicas_is_accepted_once(
    replicas: list[ServerProcess],
) -> None:
    for _ in range(5):
        event = _event("race-" + uuid.uuid4().hex)
        bodies: list[dict[str, Any]] = []
        start = threading.Barrier(len(replicas))
        threads = [threading.Thread(target=_race, args=(s, event, start, bodies)) for s in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted((b["accepted"], b["duplicates"]) for b in bodies) == [(0, 1), (0, 1), (1, 0)]


def _hammer(server: ServerProcess, key: str, count: int, codes: list[int]) -> None:
    with httpx.Client(headers={"x-api-key": key}, timeout=30) as client:
        codes.extend(client.get(server.url + "/api/v1/me").status_code for _ in range(count))


def test_one_keys_rate_limit_is_shared_by_all_replicas(replicas: list[ServerProcess]) -> None:
    key, _ = _new_key(replicas[0], ["read"])
    statuses: list[list[int]] = [[] for _ in replicas]
    started = time.monotonic()
    threads = [
        threading.Thread(target=_hammer, args=(server, key, RATE_LIMIT + 5, codes))
        for server, codes in zip(replicas, statuses, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - started
    allowed = sum(s.count(200) for s in statuses)
    assert {code for s in statuses for code in s} <= {200, 429}
    # Per-replica budgets would allow 3 x RATE_LIMIT (each replica gets RATE_LIMIT + 5 requests,
    # so each must refuse some). The sliding window may free a little of
    # the budget while the test runs (a share of elapsed/60 s of it), nothing more.
    assert RATE_LIMIT <= allowed <= RATE_LIMIT + math.ceil(RATE_LIMIT * elapsed / 60) + 1
    assert all(429 in s for s in statuses), "a replica kept its own budget"


def test_a_websocket_on_replica_3_receives_events_ingested_on_replica_1(
    replicas: list[ServerProcess],
) -> None:
    r1, _, r3 = replicas
    with open_ws(r3) as ws:
        subscribe(ws, "events")
        # Replicas learn who listens where within about a second: probe until one arrives.
        deadline = time.monotonic() + 20
        while True:
            probe = "probe-" + uuid.uuid4().hex
            _post(r1, _event(probe, "probe-user"))
            try:
                collect_events(ws, {probe}, timeout=1)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "replica 3 never received replica 1's events"
        wanted = "live-" + uuid.uuid4().hex
        _post(r1, _event(wanted, "live-user"))
        events, _ = collect_events(ws, {wanted}, timeout=5)
        events += [e for m in barrier(ws) for e in events_of(m)]
        mine = [e for e in events if e["event_id"] == wanted]
        assert len(mine) == 1, "delivered once, not once per replica"
        assert mine[0]["user_id"] == "live-user"
        assert mine[0]["event_type"]["data"]["title"] == "Olá 🌍"
        assert mine[0]["project_id"] == "default"


def test_a_filtered_subscription_on_replica_2_gets_only_matching_remote_events(
    replicas: list[ServerProcess],
) -> None:
    r1, r2, _ = replicas
    with open_ws(r2) as ws:
        ws.send(
            '{"type":"Subscribe","payload":{"channels":["events"],"filter":{"user_ids":["fu-1"]}}}'
        )
        deadline = time.monotonic() + 20
        while True:
            probe = "fprobe-" + uuid.uuid4().hex
            _post(r1, _event(probe, "fu-1"))
            try:
                collect_events(ws, {probe}, timeout=1)
                break
            except TimeoutError:
                assert time.monotonic() < deadline
        other, wanted = "f-" + uuid.uuid4().hex, "f-" + uuid.uuid4().hex
        _batch(r1, [_event(other, "fu-2"), _event(wanted, "fu-1")])
        events, _ = collect_events(ws, {wanted}, timeout=5)
        events += [e for m in barrier(ws) for e in events_of(m)]
        assert {e["user_id"] for e in events} == {"fu-1"}


def test_a_key_created_on_one_replica_works_on_another_and_its_revocation_everywhere_within_1s(
    replicas: list[ServerProcess],
) -> None:
    r1, r2, r3 = replicas
    key, key_id = _new_key(r1, ["read"])
    assert _me(r2, key).status_code == 200
    assert _me(r1, key).status_code == 200
    listed = httpx.get(r3.url + "/api/v1/keys", headers={"x-api-key": TEST_KEY}, timeout=30)
    assert key_id in {k["key_id"] for k in listed.json()["keys"]}

    revoked = httpx.delete(
        r2.url + f"/api/v1/keys/{key_id}", headers={"x-api-key": TEST_KEY}, timeout=30
    )
    assert revoked.status_code == 200, revoked.text
    revoked_at = time.monotonic()
    assert _me(r2, key).status_code == 401  # the revoking replica: at once
    time.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
    refused = _me(r1, key)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert _me(r3, key).status_code == 401


def _cli(redis_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AVILA_REDIS_URL": redis_url, "AVILA_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "avila.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_avila_keys_cli_manages_the_shared_keys(
    replicas: list[ServerProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    r1, r2, _ = replicas
    created = _cli(redis_server.url, tmp_path, "create", "--scopes", "read", "--name", "cli")
    assert created.returncode == 0, created.stderr
    fields = dict(line.split(":", 1) for line in created.stdout.splitlines())
    key, key_id = fields["key"].strip(), fields["key_id"].strip()
    assert _me(r1, key).status_code == 200
    listed = _cli(redis_server.url, tmp_path, "list")
    assert key_id in listed.stdout
    assert not (tmp_path / "keys.sqlite").exists(), "the CLI wrote a replica-local key file"
    assert _cli(redis_server.url, tmp_path, "revoke", key_id).returncode == 0
    time.sleep(1.0)
    assert _me(r2, key).status_code == 401


def _load(
    servers: list[ServerProcess],
    start: int,
    key: str,
    stop: threading.Event,
    acked: list[tuple[str, int, bool]],
    lock: threading.Lock,
) -> None:
    """Post batches (one user per batch) round-robin; on a connection failure re-send the same
    batch to the next replica, as a load balancer's client would."""
    turn = start
    with httpx.Client(headers={"x-api-key": key}, timeout=30) as client:
        while not stop.is_set():
            user = "kill-" + uuid.uuid4().hex[:12]
            batch = [_event(f"{user}-{i}", user) for i in range(100)]
            for attempt in range(6):
                server = servers[turn % len(servers)]
                turn += 1
                try:
                    response = client.post(
                        server.url + "/api/v1/events/batch", json={"events": batch}
                    )
                except httpx.HTTPError:
                    continue
                if response.status_code == 202:
                    body = response.json()
                    assert body["accepted"] + body["duplicates"] == len(batch)
                    with lock:
                        acked.append((user, len(batch), attempt == 0))
                    break


def _stored_ids(servers: list[ServerProcess], key: str) -> list[str]:
    """Every stored event id of the key's project, over all replicas (one export each)."""
    ids: list[str] = []
    for server in servers:
        response = httpx.post(
            server.url + "/api/v1/export",
            json={"format": "ndjson"},
            headers={"x-api-key": key},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        ids += [json.loads(line)["event_id"] for line in response.text.splitlines() if line]
    return ids


def _project_key(redis_url: str, project: str, scopes: list[str]) -> str:
    """A key of another project, made as ``avila keys create --project`` makes it (the key
    registry in Redis, in this process: the CLI itself is tested above)."""
    client = sync_client(redis_url)
    keys = RedisKeyStore(client)
    try:
        secret, _ = keys.create(project, scopes)
    finally:
        keys.close()
        client.close()
    return secret


def _wait_for_empty_ingest_logs(servers: list[ServerProcess], deadline: float) -> None:
    """Until every replica's loader has moved its ingest log into its store (or the deadline:
    the export check below then tells what is missing)."""
    for server in servers:
        while time.monotonic() < deadline:
            health = httpx.get(server.url + "/health", timeout=30).json()
            if health.get("ingest_log", {}).get("events", 0) == 0:
                break
            time.sleep(0.1)


def test_kill_9_of_a_replica_loses_no_acknowledged_event(
    replicas: list[ServerProcess], redis_server: RedisServer
) -> None:
    # Own project and keys: the load stays below the per-key rate limit of this module.
    project = "kill-" + uuid.uuid4().hex[:8]
    load_key = _project_key(redis_server.url, project, ["ingest"])
    check_key = _project_key(redis_server.url, project, ["ingest", "read"])
    victim = replicas[1]
    stop, lock = threading.Event(), threading.Lock()
    acked: list[tuple[str, int, bool]] = []
    clients = [
        threading.Thread(target=_load, args=(replicas, i, load_key, stop, acked, lock))
        for i in range(3)
    ]
    for c in clients:
        c.start()
    deadline = time.monotonic() + 60
    while len(acked) < 15 and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.kill()
    killed_at = len(acked)
    while len(acked) < killed_at + 9 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    for c in clients:
        c.join(60)
    assert killed_at >= 15 and len(acked) >= killed_at + 9, "the load did not go on"

    restarted = ServerProcess(victim.data_dir, env=_env(redis_server.url), port=victim.port)
    restarted.start()  # loads what its ingest log acknowledged
    replicas[1] = restarted

    # A client retrying acknowledged batches on any replica gets duplicates only.
    for n, (user, size, _) in enumerate(acked[:: max(1, len(acked) // 8)]):
        batch = [_event(f"{user}-{i}", user) for i in range(size)]
        body = _batch(replicas[n % 3], batch, check_key)
        assert (body["accepted"], body["duplicates"]) == (0, size)

    wanted = {f"{user}-{i}" for user, size, _ in acked for i in range(size)}
    deadline = time.monotonic() + 60
    _wait_for_empty_ingest_logs(replicas, deadline)  # cheaper to ask than three exports
    while True:  # the loaders move the logs into the stores shortly after the 202s
        stored = _stored_ids(replicas, check_key)
        if wanted <= set(stored) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    lost = wanted - set(stored)
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:3]}"
    # Acknowledged at the first try: stored once across all replicas. (A batch re-sent after a
    # connection failure may also have been made durable by the replica that died.)
    counts = Counter(stored)
    first_try = {f"{u}-{i}" for u, size, first in acked if first for i in range(size)}
    twice = [e for e in first_try if counts[e] != 1]
    assert not twice, f"{len(twice)} events stored twice, e.g. {twice[:3]}"
