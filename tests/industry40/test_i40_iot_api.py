"""Telemetry ingestion, devices and digital twins against a real server process."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

I40 = "/api/v1/industry40"

SEED_READING = {
    "device_id": "sensor_001",
    "device_type": "Temperature",
    "timestamp": "2025-11-26T10:00:00Z",
    "metrics": {"temperature": 75.5, "humidity": 60.2, "pressure": 1013.25},
}


def uid(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    return body["error"]


def test_seed_reading_is_stored_and_shows_in_the_twin(client: httpx.Client) -> None:
    response = client.post(f"{I40}/iot/ingest", json=SEED_READING)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "rejected": [], "stored_values": 3}
    twin = client.get(f"{I40}/twin/sensor_001")
    assert twin.status_code == 200
    body = twin.json()
    assert body["device_type"] == "Temperature"
    assert body["reported"]["temperature"] == {"value": 75.5, "timestamp": "2025-11-26T10:00:00Z"}
    assert set(body) >= {
        "device_id",
        "device_type",
        "reported",
        "desired",
        "delta",
        "health_score",
        "last_seen",
        "version",
    }
    assert 0 <= body["health_score"] <= 100
    assert twin.headers["etag"] == f'"{body["version"]}"'


def test_batch_keeps_valid_readings_and_rejects_each_bad_one(client: httpx.Client) -> None:
    good, bad = uid(), uid()
    future = iso(datetime.now(UTC) + timedelta(hours=2))
    body = (
        '{"readings": ['
        f'{{"device_id": "{good}", "metrics": {{"t": 1.5}}}},'
        f'{{"device_id": "{bad}", "metrics": {{"t": NaN}}}},'
        f'{{"device_id": "{bad}", "metrics": {{"t": "hot"}}}},'
        f'{{"device_id": "{bad}", "metrics": {{"t": true}}}},'
        f'{{"device_id": "{bad}", "metrics": {{"t": 1e999}}}},'
        f'{{"device_id": "{bad}", "timestamp": "{future}", "metrics": {{"t": 1}}}},'
        '{"metrics": {"t": 1}},'
        f'{{"device_id": "{good}", "metrics": {{"u": 2, "v": -3}}}}'
        "]}"
    )
    response = client.post(
        f"{I40}/iot/ingest", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["accepted"] == 2 and result["stored_values"] == 3
    codes = [(r["index"], r["code"]) for r in result["rejected"]]
    assert codes == [
        (1, "non_finite_value"),
        (2, "non_numeric_value"),
        (3, "non_numeric_value"),
        (4, "non_finite_value"),
        (5, "timestamp_in_future"),
        (6, "invalid_reading"),
    ]
    assert result["rejected"][0]["path"] == "readings[1].metrics.t"
    assert set(client.get(f"{I40}/twin/{good}").json()["reported"]) == {"t", "u", "v"}
    error_of(client.get(f"{I40}/twin/{bad}"), 404, "device_not_found")


def test_oversize_batch_rejects_the_readings_past_the_limit(client: httpx.Client) -> None:
    device = uid()
    readings = [{"device_id": device, "metrics": {"x": i}} for i in range(10_002)]
    response = client.post(f"{I40}/iot/ingest", json={"readings": readings})
    assert response.status_code == 202
    result = response.json()
    assert result["accepted"] == 10_000
    assert [(r["index"], r["code"]) for r in result["rejected"]] == [
        (10_000, "batch_limit_exceeded"),
        (10_001, "batch_limit_exceeded"),
    ]


def test_single_bad_reading_and_bad_bodies_get_the_error_shape(client: httpx.Client) -> None:
    bad = client.post(f"{I40}/iot/ingest", json={"device_id": uid(), "metrics": {"t": "x"}})
    assert error_of(bad, 422, "non_numeric_value")["details"][0]["path"] == "metrics.t"
    error_of(
        client.post(
            f"{I40}/iot/ingest", content=b"{not json", headers={"content-type": "application/json"}
        ),
        400,
        "malformed_json",
    )
    error_of(client.post(f"{I40}/iot/ingest", json=[1, 2]), 422, "validation_failed")
    anonymous = httpx.post(str(client.base_url) + f"{I40}/iot/ingest", json=SEED_READING)
    error_of(anonymous, 401, "missing_api_key")


def test_desired_state_etag_and_delta(client: httpx.Client) -> None:
    device = uid()
    client.post(f"{I40}/iot/ingest", json={"device_id": device, "metrics": {"setpoint": 70}})
    twin = client.get(f"{I40}/twin/{device}")
    assert twin.json()["version"] == 0 and twin.json()["desired"] == {}
    put = client.put(
        f"{I40}/twin/{device}/desired",
        json={"setpoint": 72, "mode": "eco"},
        headers={"If-Match": twin.headers["etag"]},
    )
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1 and put.headers["etag"] == '"1"'
    stale = client.put(
        f"{I40}/twin/{device}/desired", json={"setpoint": 1}, headers={"If-Match": '"0"'}
    )
    error_of(stale, 412, "twin_version_mismatch")
    body = client.get(f"{I40}/twin/{device}").json()
    assert body["desired"] == {"setpoint": 72, "mode": "eco"}
    assert body["delta"] == {"setpoint": 72, "mode": "eco"}
    client.post(f"{I40}/iot/ingest", json={"device_id": device, "metrics": {"setpoint": 72}})
    assert client.get(f"{I40}/twin/{device}").json()["delta"] == {"mode": "eco"}
    # no If-Match: last writer wins
    assert client.put(f"{I40}/twin/{device}/desired", json={}).json()["version"] == 2
    error_of(client.put(f"{I40}/twin/{uid()}/desired", json={}), 404, "device_not_found")


def test_history_rollups_match_an_oracle(client: httpx.Client) -> None:
    device = uid()
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    readings = [
        {
            "device_id": device,
            "timestamp": iso(start + timedelta(seconds=10 * i)),
            "metrics": {"p": i % 7},
        }
        for i in range(360)  # one hour, every 10 s
    ]
    assert client.post(f"{I40}/iot/ingest", json={"readings": readings}).json()["accepted"] == 360
    window = {"start_time": iso(start), "end_time": iso(start + timedelta(hours=1))}
    raw = client.get(f"{I40}/twin/{device}/history", params={**window, "resolution": "raw"}).json()
    assert [p["value"] for p in raw["series"]["p"]] == [i % 7 for i in range(360)]
    minute = client.get(
        f"{I40}/twin/{device}/history", params={**window, "resolution": "1m", "metric": "p"}
    ).json()
    points = minute["series"]["p"]
    assert len(points) == 60
    for k, point in enumerate(points):
        values = [i % 7 for i in range(6 * k, 6 * k + 6)]
        assert point["avg"] == pytest.approx(sum(values) / 6)
        assert (point["min"], point["max"], point["count"], point["last"]) == (
            min(values),
            max(values),
            6,
            values[-1],
        )
    hour = client.get(f"{I40}/twin/{device}/history", params={**window, "resolution": "1h"}).json()
    assert hour["series"]["p"][0]["count"] == 360


def test_forecast_follows_a_linear_trend(client: httpx.Client) -> None:
    device = uid()
    start = datetime.now(UTC) - timedelta(hours=2)
    readings = [
        {
            "device_id": device,
            "timestamp": iso(start + timedelta(minutes=i)),
            "metrics": {"temp": 50 + 0.5 * i + (0.2 if i % 2 else -0.2)},
        }
        for i in range(100)
    ]
    client.post(f"{I40}/iot/ingest", json={"readings": readings})
    out = client.get(
        f"{I40}/twin/{device}/forecast", params={"metric": "temp", "horizon_minutes": 30}
    ).json()
    assert out["trend_per_hour"] == pytest.approx(30.0, rel=0.01)
    last = out["points"][-1]
    assert last["value"] == pytest.approx(50 + 0.5 * 99 + 0.5 * 30, abs=0.5)
    assert last["lower"] < last["value"] < last["upper"]


def test_devices_attributes_and_topology(client: httpx.Client) -> None:
    site = uid("site")
    machine, sensor = uid("m"), uid("s")
    client.post(
        f"{I40}/iot/ingest",
        json={
            "readings": [
                {
                    "device_id": machine,
                    "device_type": "cnc",
                    "metrics": {"state": 1},
                    "attributes": {"site": site, "line": "L1"},
                },
                {
                    "device_id": sensor,
                    "device_type": "vib",
                    "metrics": {"v": 2},
                    "attributes": {"site": site, "line": "L1", "machine": machine},
                },
            ]
        },
    )
    twin = client.get(f"{I40}/twin/{machine}").json()
    assert twin["relationships"] == {
        "site": site,
        "line": "L1",
        "machine": machine,
        "children": [sensor],
    }
    tree = client.get(f"{I40}/topology").json()
    mine = next(s for s in tree["sites"] if s["site"] == site)
    assert mine["lines"] == [
        {"line": "L1", "machines": [{"machine": machine, "devices": [sensor]}]}
    ]
    updated = client.put(
        f"{I40}/devices/{machine}", json={"attributes": {"site": site, "line": "L2"}}
    ).json()
    assert updated["line"] == "L2"
    assert client.get(f"{I40}/twin/{machine}").json()["relationships"]["line"] == "L2"


def test_openapi_lists_every_industry40_endpoint(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/iot/ingest",
        "/twin/{device_id}",
        "/twin/{device_id}/desired",
        "/twin/{device_id}/history",
        "/twin/{device_id}/forecast",
        "/maintenance/predict",
        "/oee/calculate",
        "/quality/inspect",
        "/energy/consumption",
        "/optimize/production",
        "/anomaly/detect",
        "/alarms/rules/{device_type}",
    ):
        assert f"{I40}{path}" in paths, path


def test_threshold_alarm_is_published_on_the_websocket(client: httpx.Client, server: Any) -> None:
    device_type = uid("type")
    rules = {"rules": [{"metric": "temp", "max": 80, "severity": "critical"}]}
    assert client.put(f"{I40}/alarms/rules/{device_type}", json=rules).status_code == 200
    device = uid()
    with _alerts_socket(server) as ws:
        for value in (70, 85, 90, 75):
            client.post(
                f"{I40}/iot/ingest",
                json={"device_id": device, "device_type": device_type, "metrics": {"temp": value}},
            )
        raised = json.loads(ws.recv(timeout=10))
        cleared = json.loads(ws.recv(timeout=10))
    assert raised["type"] == "Alert"
    assert raised["payload"] | {"timestamp": None} == {
        "type": "threshold_alarm",
        "state": "raised",
        "device_id": device,
        "device_type": device_type,
        "metric": "temp",
        "value": 85.0,
        "limit": 80.0,
        "bound": "max",
        "severity": "critical",
        "timestamp": None,
    }
    assert cleared["payload"]["state"] == "cleared" and cleared["payload"]["value"] == 75.0


def test_removing_a_rule_clears_its_raised_alarms(client: httpx.Client, server: Any) -> None:
    """An alarm whose rule (or bound) is removed would never be judged again: setting the rules
    clears it and announces the clear (``reason: rule_removed``); an alarm whose limit only
    moved stays for the next reading to judge."""
    device_type = uid("type")
    both = {"rules": [{"metric": "temp", "max": 80}, {"metric": "rpm", "min": 10}]}
    assert client.put(f"{I40}/alarms/rules/{device_type}", json=both).status_code == 200
    device = uid()
    with _alerts_socket(server) as ws:
        reading = {
            "device_id": device,
            "device_type": device_type,
            "metrics": {"temp": 90, "rpm": 5},
        }
        assert client.post(f"{I40}/iot/ingest", json=reading).status_code == 202
        raised = [json.loads(ws.recv(timeout=10))["payload"] for _ in range(2)]
        assert sorted((a["metric"], a["state"]) for a in raised) == [
            ("rpm", "raised"),
            ("temp", "raised"),
        ]
        moved = {"rules": [{"metric": "rpm", "min": 3}]}  # temp removed, rpm's limit moved
        assert client.put(f"{I40}/alarms/rules/{device_type}", json=moved).status_code == 200
        cleared = json.loads(ws.recv(timeout=10))["payload"]
    assert cleared | {"timestamp": None} == {
        "type": "threshold_alarm",
        "state": "cleared",
        "reason": "rule_removed",
        "device_id": device,
        "device_type": device_type,
        "metric": "temp",
        "value": 90.0,
        "limit": 80.0,
        "bound": "max",
        "severity": "warning",
        "timestamp": None,
    }
    active = client.get(f"{I40}/alarms/active").json()["alarms"]
    assert [(a["device_id"], a["metric"]) for a in active if a["device_id"] == device] == [
        (device, "rpm")
    ]


@contextlib.contextmanager
def _alerts_socket(server: Any) -> Iterator[Any]:
    """A WebSocket subscribed to the ``alerts`` channel."""
    from websockets.sync.client import connect

    url = server.url.replace("http", "ws") + "/ws?api_key=test-key-all-scopes"
    with connect(url) as ws:
        ws.send(json.dumps({"type": "Subscribe", "payload": {"channels": ["alerts"]}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "Subscribed"
        yield ws
