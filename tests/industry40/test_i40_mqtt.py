"""MQTT bridge against a real mosquitto broker; messages are published with mosquitto_pub.

These tests need the Debian packages ``mosquitto`` and ``mosquitto-clients``; without them they
fail (they are part of what must work), they do not skip.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from avila.testing.server import free_port

I40 = "/api/v1/industry40"


def _require(tool: str) -> str:
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )
    if path is None:
        pytest.fail(f"{tool} is missing: apt-get install -y mosquitto mosquitto-clients")
    return path


class Broker:
    """A mosquitto process with on-disk persistence, restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = _require("mosquitto")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        # `user`: started as root, mosquitto would switch to user "mosquitto", who cannot
        # write its persistence file here.
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_queued_messages 100000\n"
            f"user {getpass.getuser()}\n"
        )
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(10)


def publish(
    broker: Broker, topic: str, *, message: str | None = None, file: Path | None = None
) -> None:
    """mosquitto_pub at QoS 1, retried until the broker acknowledged it (exit status 0)."""
    tool = _require("mosquitto_pub")
    args = [tool, "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic]
    args += ["-m", message] if message is not None else ["-f", str(file)]
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(args, capture_output=True, timeout=15)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"mosquitto_pub failed: {done.stderr!r}")
        time.sleep(0.1)


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


# Sparkplug B payloads, encoded here by hand from the published .proto (independent of the
# server's decoder): field numbers Payload.timestamp=1, metrics=2; Metric.name=1, alias=2,
# timestamp=3, datatype=4, int_value=10, double_value=13.
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _metric(*, name: str | None, alias: int, datatype: int, value: float | int) -> bytes:
    body = b""
    if name is not None:
        body += _key(1, 2) + _varint(len(name)) + name.encode()
    body += _key(2, 0) + _varint(alias) + _key(4, 0) + _varint(datatype)
    if datatype == 10:  # Double
        body += _key(13, 1) + struct.pack("<d", value)
    else:  # Int32, two's complement in a uint32
        body += _key(10, 0) + _varint(int(value) & 0xFFFFFFFF)
    return _key(2, 2) + _varint(len(body)) + body


def sparkplug_payload(ts_ms: int, metrics: list[bytes]) -> bytes:
    return _key(1, 0) + _varint(ts_ms) + b"".join(metrics)


@pytest.fixture
def client(bridged: httpx.Client) -> httpx.Client:
    """A client of a server whose bridge subscribes to ``broker`` (tests/industry40/conftest)."""
    return bridged


def _reported(client: httpx.Client, device: str) -> dict[str, Any] | None:
    response = client.get(f"{I40}/twin/{device}")
    return response.json()["reported"] if response.status_code == 200 else None


def test_avila_and_sparkplug_topics_reach_the_twin(
    broker: Broker, client: httpx.Client, tmp_path: Path
) -> None:
    reading = {
        "device_type": "Temperature",
        "timestamp": "2026-11-20T10:00:00Z",
        "metrics": {"temperature": 75.5, "humidity": 60.2},
    }
    # the bridge subscribes once connected: publish until the reading shows up
    wait_for(
        lambda: (
            publish(broker, "avila/default/mq-1/telemetry", message=json.dumps(reading))
            or _reported(client, "mq-1")
        )
    )
    assert _reported(client, "mq-1")["temperature"]["value"] == 75.5  # type: ignore[index]

    ts = int(datetime(2026, 11, 20, 11, tzinfo=UTC).timestamp() * 1000)
    birth = tmp_path / "birth.bin"
    birth.write_bytes(
        sparkplug_payload(
            ts,
            [
                _metric(name="Temperature", alias=1, datatype=10, value=21.5),
                _metric(name="Offset", alias=2, datatype=3, value=-7),
            ],
        )
    )
    data = tmp_path / "data.bin"
    data.write_bytes(
        sparkplug_payload(ts + 60_000, [_metric(name=None, alias=1, datatype=10, value=22.25)])
    )
    publish(broker, "spBv1.0/default/DBIRTH/edge-1/plc-7", file=birth)
    publish(broker, "spBv1.0/default/DDATA/edge-1/plc-7", file=data)
    reported = wait_for(
        lambda: (
            (r := _reported(client, "edge-1:plc-7"))
            and r.get("Temperature", {}).get("value") == 22.25
            and r
        )
    )
    assert reported["Offset"]["value"] == -7.0
    assert reported["Temperature"]["timestamp"] == "2026-11-20T11:01:00Z"
    twin = client.get(f"{I40}/twin/edge-1:plc-7").json()
    assert twin["device_type"] == "sparkplug"
    assert twin["attributes"] == {"sparkplug_group": "default", "edge_node": "edge-1"}


def test_broker_restart_mid_stream_loses_no_acknowledged_reading(
    broker: Broker, client: httpx.Client
) -> None:
    device = f"mq-{uuid.uuid4().hex[:8]}"
    start = datetime(2026, 11, 20, tzinfo=UTC)
    topic = f"avila/default/{device}/telemetry"

    def message(i: int) -> str:
        ts = (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
        return json.dumps({"timestamp": ts, "metrics": {"seq": i}})

    wait_for(lambda: publish(broker, topic, message=message(0)) or _reported(client, device))
    total = 80
    for i in range(1, total):
        publish(broker, topic, message=message(i))
        if i == total // 2:
            broker.stop()
            broker.start()

    def stored() -> set[int]:
        params = {
            "metric": "seq",
            "resolution": "raw",
            "start_time": "2026-11-20T00:00:00Z",
            "end_time": "2026-11-21T00:00:00Z",
        }
        body = client.get(f"{I40}/twin/{device}/history", params=params).json()
        return {int(p["value"]) for p in body["series"].get("seq", [])}

    # every message mosquitto_pub saw acknowledged must arrive (at least once)
    wait_for(lambda: stored() == set(range(total)), timeout=60)
