"""MQTT messages dropped whole are counted on ``/metrics``
(``avila_mqtt_messages_dropped_total`` by ``reason``; docs/operations.md): real mosquitto, a
real server process, its metrics read over HTTP as Prometheus does."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import TEST_KEY
from tests.industry40.test_i40_mqtt import Broker, publish, wait_for
from tests.industry40.test_mqtt_limits import (
    _batch,
    _sparkplug,
    _stored,
    mqtt_settings,
    wait_until_subscribed,
)

from avila.industry40.telemetry import MAX_READINGS
from avila.testing import ServerProcess

DROPPED = "avila_mqtt_messages_dropped"


def _dropped(server: ServerProcess) -> dict[str, float]:
    """``reason`` -> value of the counter, from the server's ``/metrics`` (no key)."""
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name == DROPPED:
            assert family.type == "counter"
            for sample in family.samples:
                if sample.name == f"{DROPPED}_total":
                    found[sample.labels["reason"]] = sample.value
    return found


def test_dropped_messages_are_counted_by_reason_on_metrics(
    broker: Broker, make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server(**mqtt_settings(broker))
    tag = uuid.uuid4().hex[:8]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
        first = wait_until_subscribed(broker, c, tag, start)
        # every reason is there from the start, at 0 (a rate() has a first sample)
        assert _dropped(server) == {"batch_limit_exceeded": 0.0, "malformed": 0.0}

        over = tmp_path / "over.json"
        over.write_bytes(_batch(MAX_READINGS + 1, start))
        publish(broker, f"avila/default/over-{tag}/telemetry", file=over)
        spark = tmp_path / "spark.bin"
        spark.write_bytes(_sparkplug(MAX_READINGS + 1, start))
        publish(broker, f"spBv1.0/default/NDATA/edge-{tag}", file=spark)
        publish(broker, f"avila/default/bad-{tag}/telemetry", message="{not json")
        publish(broker, "avila//nobody/telemetry", message=first)  # no project
        # handled in arrival order: once this one is stored, the ones before it were seen
        marker = f"avila/default/marker-{tag}/telemetry"
        publish(broker, marker, message=first)
        wait_for(lambda: _stored(c, f"marker-{tag}", start) == 1)

        assert _stored(c, f"over-{tag}", start) is None
        assert _dropped(server) == {"batch_limit_exceeded": 2.0, "malformed": 2.0}
