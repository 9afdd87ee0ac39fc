"""Alerts that other modules publish on the bus reach the project's /ws subscribers only."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import TestClient

from avila.app import create_app
from avila.config import Settings
from avila.live import get_bus


def test_alerts_from_the_bus_reach_subscribers(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, api_keys=("k1",), rate_limit_per_minute=0))
    bus = get_bus(app.state)
    with TestClient(app) as client, client.websocket_connect("/ws?api_key=k1") as ws:
        ws.send_json({"type": "Subscribe", "payload": {"channels": ["alerts"]}})
        assert ws.receive_json()["type"] == "Subscribed"
        portal = client.blocking_portal
        assert portal.call(bus.publish, "elsewhere", "alerts", {"kind": "not yours"}) == 0
        assert portal.call(bus.publish, "default", "alerts", {"kind": "anomaly", "score": 4.2}) == 1
        message = ws.receive_json()
        assert message == {
            "type": "Alert",
            "payload": {"kind": "anomaly", "score": 4.2},
            "dropped": 0,
        }
