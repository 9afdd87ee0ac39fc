"""An MQTT message takes at most 10,000 readings, as an HTTP body does (real mosquitto, real
server): a message at the cap is stored whole; a message past it is logged, acknowledged and
stores nothing (a publisher gets no answer, so part of it stored would lose the rest silently).
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import TEST_KEY
from tests.industry40.test_i40_mqtt import Broker, _key, _varint, publish, wait_for

from avila.industry40.telemetry import MAX_READINGS
from avila.testing import ServerProcess

I40 = "/api/v1/industry40"


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _batch(count: int, start: datetime) -> bytes:
    readings = [
        {"timestamp": _iso(start + timedelta(milliseconds=200 * i)), "metrics": {"seq": i}}
        for i in range(count)
    ]
    return json.dumps({"readings": readings}).encode()


def _sparkplug(count: int, start: datetime) -> bytes:
    """A Sparkplug B payload with ``count`` metrics at distinct timestamps (``count``
    readings), encoded by hand: Metric.name=1, timestamp=3, datatype=4, double_value=13."""
    ms = int(start.timestamp() * 1000)
    out = b""
    for i in range(count):
        body = _key(1, 2) + _varint(3) + b"seq" + _key(3, 0) + _varint(ms + 200 * i)
        body += _key(4, 0) + _varint(10) + _key(13, 1) + struct.pack("<d", float(i))
        out += _key(2, 2) + _varint(len(body)) + body
    return _key(1, 0) + _varint(ms) + out


def _stored(client: httpx.Client, device: str, start: datetime) -> int | None:
    """Readings stored for ``device`` in the hour from ``start``; None: device unknown."""
    params = {
        "metric": "seq",
        "resolution": "1m",
        "start_time": _iso(start),
        "end_time": _iso(start + timedelta(hours=1)),
    }
    response = client.get(f"{I40}/twin/{device}/history", params=params)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return sum(int(p["count"]) for p in response.json()["series"].get("seq", []))


def mqtt_settings(broker: Broker) -> dict[str, str]:
    """A server's settings for a bridge to ``broker`` (a client id of its own)."""
    return {
        "AVILA_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
        "AVILA_MQTT_CLIENT_ID": f"avila-test-{uuid.uuid4().hex[:8]}",
    }


def wait_until_subscribed(broker: Broker, client: httpx.Client, tag: str, start: datetime) -> str:
    """The bridge subscribes once connected: publish a first reading (device ``ready-<tag>``)
    until it is stored; returns that message."""
    ready = f"avila/default/ready-{tag}/telemetry"
    first = json.dumps({"timestamp": _iso(start), "metrics": {"seq": 0}})
    wait_for(
        lambda: publish(broker, ready, message=first) or _stored(client, f"ready-{tag}", start)
    )
    return first


def _log_lines(server: ServerProcess, message: str) -> list[dict[str, Any]]:
    lines = []
    for line in server.log_path.read_text().splitlines():
        if line.startswith("{") and message in line:
            lines.append(json.loads(line))
    return lines


def test_a_message_past_the_cap_stores_nothing_and_one_at_the_cap_is_stored_whole(
    broker: Broker, make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server(**mqtt_settings(broker))
    tag = uuid.uuid4().hex[:8]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
        wait_until_subscribed(broker, c, tag, start)

        over, at_cap = tmp_path / "over.json", tmp_path / "at_cap.json"
        over.write_bytes(_batch(MAX_READINGS + 1, start))
        at_cap.write_bytes(_batch(MAX_READINGS, start))
        publish(broker, f"avila/default/over-{tag}/telemetry", file=over)
        spark = tmp_path / "spark.bin"
        spark.write_bytes(_sparkplug(MAX_READINGS + 1, start))
        publish(broker, f"spBv1.0/default/NDATA/edge-{tag}", file=spark)
        publish(broker, f"avila/default/cap-{tag}/telemetry", file=at_cap)

        # messages are handled in arrival order: once the second is stored, the first was seen
        wait_for(lambda: _stored(c, f"cap-{tag}", start) == MAX_READINGS, timeout=60)
        assert _stored(c, f"over-{tag}", start) is None  # not one reading, not even the device
        assert _stored(c, f"edge-{tag}", start) is None

        refused = _log_lines(server, "mqtt message dropped")
        assert [(r["topic"], r["code"], r["readings"]) for r in refused] == [
            (f"avila/default/over-{tag}/telemetry", "batch_limit_exceeded", MAX_READINGS + 1),
            (f"spBv1.0/default/NDATA/edge-{tag}", "batch_limit_exceeded", MAX_READINGS + 1),
        ]
        assert str(MAX_READINGS) in refused[0]["error"]

        # the topic keeps working: a later message on it is stored
        later = json.dumps({"timestamp": _iso(start), "metrics": {"seq": 7}})
        publish(broker, f"avila/default/over-{tag}/telemetry", message=later)
        wait_for(lambda: _stored(c, f"over-{tag}", start) == 1)
