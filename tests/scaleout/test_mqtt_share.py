"""Two replicas' MQTT bridges in one shared subscription (``AVILA_MQTT_SHARE_GROUP``) on a real
mosquitto broker: every message is stored by exactly one of them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_KEY
from tests.industry40.test_i40_mqtt import Broker, publish, wait_for

I40 = "/api/v1/industry40"
START = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def share_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


def _message(i: int) -> str:
    ts = (START + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
    return json.dumps({"timestamp": ts, "metrics": {"seq": i}})


def _stored(client: httpx.Client, device: str) -> list[int]:
    params = {
        "metric": "seq",
        "resolution": "raw",
        "start_time": "2026-11-20T00:00:00Z",
        "end_time": "2026-11-21T00:00:00Z",
    }
    response = client.get(f"{I40}/twin/{device}/history", params=params)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [int(p["value"]) for p in response.json()["series"].get("seq", [])]


def test_each_message_of_a_shared_subscription_is_stored_by_one_replica(
    share_broker: Broker, make_server: Callable[..., Any]
) -> None:
    group = "avila-" + uuid.uuid4().hex[:6]
    clients = []
    for i in (1, 2):
        server = make_server(
            AVILA_MQTT_URL=f"mqtt://127.0.0.1:{share_broker.port}",
            AVILA_MQTT_CLIENT_ID=f"replica-{i}-{uuid.uuid4().hex[:6]}",
            AVILA_MQTT_SHARE_GROUP=group,
        )
        clients.append(
            httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30)
        )
    try:
        # Both bridges are in the group once each has stored one of the probes.
        probe = f"probe-{uuid.uuid4().hex[:6]}"
        seq = iter(range(10_000))
        wait_for(
            lambda: (
                publish(
                    share_broker, f"avila/default/{probe}/telemetry", message=_message(next(seq))
                )
                or all(_stored(c, probe) for c in clients)
            ),
            timeout=60,
        )

        device = f"share-{uuid.uuid4().hex[:6]}"
        total = 40
        for i in range(total):
            publish(share_broker, f"avila/default/{device}/telemetry", message=_message(i))
        wait_for(lambda: sum(len(_stored(c, device)) for c in clients) >= total, timeout=60)
        per_replica = [_stored(c, device) for c in clients]
        together = per_replica[0] + per_replica[1]
        assert sorted(together) == list(range(total)), "a message stored twice or lost"
        assert all(per_replica), "one replica took every message: no sharing"
    finally:
        for c in clients:
            c.close()
