"""A redelivered MQTT message is stored once, also across a server restart (real mosquitto,
real server; the dedup rule is in avila.industry40.mqtt's docstring)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.industry40.test_i40_mqtt import Broker, publish, wait_for

I40 = "/api/v1/industry40"


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _raw(client: httpx.Client, device: str, start: datetime) -> list[dict[str, Any]]:
    window = {
        "start_time": _iso(start - timedelta(hours=1)),
        "end_time": _iso(start + timedelta(hours=1)),
    }
    response = client.get(
        f"{I40}/twin/{device}/history", params={**window, "resolution": "raw", "metric": "temp"}
    )
    if response.status_code != 200:
        return []
    return list(response.json()["series"].get("temp", []))


def test_a_redelivered_message_is_stored_once_also_after_a_restart(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    data = tmp_path / "data"
    env = {
        "API_KEYS": TEST_KEY,
        "RATE_LIMIT_PER_MINUTE": "0",
        "AVILA_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
        "AVILA_MQTT_CLIENT_ID": f"avila-test-{uuid.uuid4().hex[:8]}",
    }
    device = f"redeliver-{uuid.uuid4().hex[:6]}"
    topic = f"avila/default/{device}/telemetry"
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)

    def message(i: int, value: float) -> str:
        return json.dumps(
            {"timestamp": _iso(t0 + timedelta(seconds=i)), "metrics": {"temp": value}}
        )

    try:
        server = ServerProcess(data, env=env).start()
        with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
            # the bridge subscribes once connected: publish the first message until it is stored
            wait_for(
                lambda: publish(broker, topic, message=message(0, 20.5)) or _raw(c, device, t0)
            )
            publish(broker, topic, message=message(0, 20.5))  # the same message again
            publish(broker, topic, message=message(1, 21.5))  # a marker behind it
            wait_for(lambda: len(_raw(c, device, t0)) >= 2)
            assert [p["value"] for p in _raw(c, device, t0)] == [20.5, 21.5]
        assert server.stop() == 0

        # after a restart the ids come back from the store
        server = ServerProcess(data, env=env).start()
        with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
            publish(broker, topic, message=message(1, 21.5))
            publish(broker, topic, message=message(2, 22.5))
            wait_for(lambda: len(_raw(c, device, t0)) >= 3)
            assert [p["value"] for p in _raw(c, device, t0)] == [20.5, 21.5, 22.5]
            # a reading without a timestamp sent twice (no DUP flag) is two readings
            untimed = f"avila/default/{device}-untimed/telemetry"
            publish(broker, untimed, message=json.dumps({"metrics": {"temp": 1.0}}))
            publish(broker, untimed, message=json.dumps({"metrics": {"temp": 1.0}}))
            now = datetime.now(UTC)
            wait_for(lambda: len(_raw(c, f"{device}-untimed", now)) >= 2)
        assert server.stop() == 0
    finally:
        broker.stop()
