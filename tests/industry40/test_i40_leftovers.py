"""Industry 4.0 leftovers of a bug hunt: OEE at (near) zero run time, non-finite alarm limits
and attributes, alarm escalation, and MQTT / Sparkplug messages that carry one bad reading.

Real parts only: the shared server process (``client``), a server with its MQTT bridge on a
real mosquitto broker, or the domain code over a real DuckDB file. Oracles come from the
published definitions (oee.com), the documented contract (docs/industry40.md) or plain
arithmetic, never from the code under test.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from tests.industry40.test_i40_mqtt import Broker, _key, _varint, publish, wait_for
from tests.live.ws_client import open_ws, recv, subscribe

from avila.errors import ValidationFailed
from avila.industry40.alarms import AlarmRules, AlarmService
from avila.industry40.anomaly import detect_anomalies
from avila.industry40.devices import DeviceRegistry
from avila.industry40.oee import calculate_oee
from avila.live.bus import LiveBus
from avila.storage.duckdb.store import DuckDBStore

I40 = "/api/v1/industry40"
MAX_DOUBLE = 1.7976931348623157e308


def uid(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: NaN / Infinity tokens are an error."""

    def refuse(token: str) -> None:
        raise AssertionError(f"non-JSON number {token} in {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = strict_json(response.text)["error"]
    assert error["code"] == code, error
    return dict(error)


# --- 1. OEE when the run time is (near) zero ------------------------------------------------


def _production(**change: float) -> dict[str, Any]:
    return {
        "planned_production_time_hours": 8.0,
        "actual_runtime_hours": 7.0,
        "ideal_cycle_time_ms": 1000.0,
        "total_units_produced": 100,
        "good_units": 90,
        **change,
    }


def _check_defined(result: dict[str, Any], ppt: float, run: float, good: int, total: int) -> None:
    """Every number finite; availability and quality from their definitions; performance is
    ideal x total / run time, whose value here is beyond any double (or x/0): no raw number,
    capped at 1 by the documented rule; OEE = A x P x Q."""
    for key in ("availability", "performance", "quality", "oee"):
        assert math.isfinite(result[key]) and 0.0 <= result[key] <= 1.0, (key, result[key])
    assert result["availability"] == run / ppt
    assert result["quality"] == good / total
    assert result["performance_raw"] is None
    assert result["performance"] == 1.0 and result["performance_capped"] is True
    assert result["oee"] == result["availability"] * result["quality"]


@pytest.mark.parametrize(
    "run_hours",
    [
        0.0,  # units counted, no run time at all: ideal x total / 0
        1e-300 / 3600,  # 1e-300 s of run time
        5e-324,  # the smallest double
    ],
)
def test_oee_with_a_vanishing_run_time_has_no_infinite_performance(run_hours: float) -> None:
    # 1e12 units at the slowest ideal cycle (1e12 ms): ideal x total = 2.8e17 h, over a run
    # time of at most 2.8e-304 h that is past the largest double (1.8e308).
    body = _production(
        actual_runtime_hours=run_hours,
        ideal_cycle_time_ms=1e12,
        total_units_produced=10**12,
        good_units=10**12 - 1,
    )
    result = calculate_oee(body)
    _check_defined(result, 8.0, run_hours, 10**12 - 1, 10**12)
    # the whole result must survive strict JSON
    strict_json(msgspec.json.encode(result).decode())


def test_oee_endpoint_answers_json_numbers_for_a_vanishing_run_time(client: httpx.Client) -> None:
    for run_hours in (0.0, 1e-300 / 3600):
        body = _production(
            actual_runtime_hours=run_hours,
            ideal_cycle_time_ms=1e12,
            total_units_produced=10**12,
            good_units=10**12,
        )
        r = client.post(f"{I40}/oee/calculate", json={"device_id": "p", "production_data": body})
        assert r.status_code == 200, r.text
        _check_defined(strict_json(r.text), 8.0, run_hours, 10**12, 10**12)


def test_oee_run_time_zero_and_nothing_made_is_zero_performance() -> None:
    """0 units in 0 run time: 0/0, and nothing was made: documented as 0 (not capped)."""
    result = calculate_oee(
        _production(actual_runtime_hours=0.0, total_units_produced=0, good_units=0)
    )
    assert result["performance"] == 0.0 and result["performance_raw"] == 0.0
    assert result["performance_capped"] is False and result["oee"] == 0.0


def test_recorded_oee_with_counts_past_any_double_is_422(client: httpx.Client) -> None:
    """Units counted as 1.7e308 three times sum to more than a double holds: a 422 naming the
    counts, not a 500."""
    device = uid("press")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    readings = [
        {
            "device_id": device,
            "timestamp": iso(t0 + timedelta(minutes=k)),
            "metrics": {"state": 1, "units_good": 1.7e308},
        }
        for k in range(3)
    ]
    assert client.post(f"{I40}/iot/ingest", json={"readings": readings}).status_code == 202
    body = {
        "device_id": device,
        "start_time": iso(t0),
        "end_time": iso(t0 + timedelta(hours=1)),
        "ideal_cycle_time_ms": 1000,
    }

    # the loader makes acknowledged readings readable within about a second
    def answer() -> httpx.Response | None:
        r = client.post(f"{I40}/oee/calculate", json=body)
        return r if r.status_code != 200 else None

    error = error_of(wait_for(answer), 422, "oee_recorded_counts_out_of_range")
    assert error["details"][0]["path"] == "production_data.total_units_produced"


# --- 2. non-finite alarm limits and attributes ------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore(str(tmp_path / "alarms.duckdb"))
    yield s
    s.close()


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ({"metric": "vib", "max": math.inf}, "$.rules[0].max"),
        ({"metric": "vib", "min": -math.inf}, "$.rules[0].min"),
        ({"metric": "vib", "min": 1.0, "max": math.nan}, "$.rules[0].max"),
    ],
)
def test_a_non_finite_alarm_limit_is_refused_not_stored_as_null(
    store: DuckDBStore, rule: dict[str, Any], path: str
) -> None:
    alarms = AlarmService(store, DeviceRegistry(store), LiveBus())
    alarms.load()
    rules = msgspec.convert({"rules": [rule]}, AlarmRules)
    with pytest.raises(ValidationFailed) as err:
        alarms.set_rules("p", "vib_sensor", rules)
    assert err.value.status == 422
    assert err.value.details[0]["path"] == path
    reloaded = AlarmService(store, DeviceRegistry(store), LiveBus())
    reloaded.load()
    assert reloaded.rules("p") == {}


@pytest.mark.parametrize("threshold", [math.inf, math.nan])
def test_a_non_finite_anomaly_threshold_is_refused(threshold: float) -> None:
    with pytest.raises(ValidationFailed) as err:
        detect_anomalies(
            {"values": [1.0, 2.0, 3.0, 4.0, 50.0], "window": 3, "threshold": threshold}
        )
    assert err.value.details[0]["path"] == "$.threshold"


def test_alarm_limit_1e999_over_http_is_refused_and_not_stored(client: httpx.Client) -> None:
    device_type = uid("type")
    r = client.put(
        f"{I40}/alarms/rules/{device_type}",
        content=b'{"rules": [{"metric": "vib", "max": 1e999}]}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= r.status_code < 500, r.text
    assert device_type not in client.get(f"{I40}/alarms/rules").json()["rules"]


def test_a_non_finite_attribute_is_rejected_at_its_path(client: httpx.Client) -> None:
    """``1e999`` is infinity (docs: non_finite_value); in an attribute it was stored as null."""
    device = uid()
    body = (
        f'{{"device_id": "{device}", "metrics": {{"t": 1}},'
        ' "attributes": {"ideal_cycle_time_ms": 1e999}}'
    )
    r = client.post(
        f"{I40}/iot/ingest", content=body.encode(), headers={"content-type": "application/json"}
    )
    error = error_of(r, 422, "non_finite_value")
    assert error["details"][0]["path"] == "attributes.ideal_cycle_time_ms"
    assert client.get(f"{I40}/twin/{device}").status_code == 404


def test_an_integer_metric_past_any_double_is_non_finite_at_its_path(
    client: httpx.Client,
) -> None:
    device = uid()
    body = f'{{"device_id": "{device}", "metrics": {{"t": 1{"0" * 400}}}}}'
    r = client.post(
        f"{I40}/iot/ingest", content=body.encode(), headers={"content-type": "application/json"}
    )
    error = error_of(r, 422, "non_finite_value")
    assert error["details"][0]["path"] == "metrics.t"


# --- 3. escalation warning -> critical and back -----------------------------------------------


def test_warning_alarm_escalates_to_critical_and_back_and_each_change_is_announced(
    client: httpx.Client, server: Any
) -> None:
    """Limits warning 10 and critical 15 on one bound. A value of 12 raises the warning; 20,
    still in alarm, crosses the critical limit: the alarm escalates (listed as critical at 15,
    announced ``escalated``); 12 again de-escalates it (listed as warning at 10, announced
    ``de-escalated``); 5 clears it."""
    device_type = uid("type")
    rules = {
        "rules": [
            {"metric": "vib", "max": 10, "severity": "warning"},
            {"metric": "vib", "max": 15, "severity": "critical"},
        ]
    }
    assert client.put(f"{I40}/alarms/rules/{device_type}", json=rules).status_code == 200
    device = uid()

    def active() -> list[tuple[str, float, str]]:
        alarms = client.get(f"{I40}/alarms/active").json()["alarms"]
        return [(a["severity"], a["limit"], a["state"]) for a in alarms if a["device_id"] == device]

    with open_ws(server) as ws:
        subscribe(ws, "alerts")
        seen = []
        for value in (12, 20, 12, 5):
            r = client.post(
                f"{I40}/iot/ingest",
                json={"device_id": device, "device_type": device_type, "metrics": {"vib": value}},
            )
            assert r.status_code == 202, r.text
            seen.append(active())
        announced = []
        while len(announced) < 4:
            message = recv(ws)
            if message["type"] == "Alert" and message["payload"].get("device_id") == device:
                announced.append(message["payload"])
    assert seen == [
        [("warning", 10.0, "raised")],
        [("critical", 15.0, "escalated")],
        [("warning", 10.0, "de-escalated")],
        [],
    ]
    assert [
        (a["state"], a["severity"], a.get("previous_severity"), a["limit"], a["value"])
        for a in announced
    ] == [
        ("raised", "warning", None, 10.0, 12.0),
        ("escalated", "critical", "warning", 15.0, 20.0),
        ("de-escalated", "warning", "critical", 10.0, 12.0),
        ("cleared", "warning", None, 10.0, 5.0),
    ]


# --- MQTT / Sparkplug: one bad reading must not cost the others --------------------------------


T0 = datetime(2026, 11, 20, tzinfo=UTC)


def _history(client: httpx.Client, device: str, metric: str) -> dict[str, float]:
    params = {
        "metric": metric,
        "resolution": "raw",
        "start_time": iso(T0 - timedelta(days=1)),
        "end_time": iso(T0 + timedelta(days=1)),
    }
    r = client.get(f"{I40}/twin/{device}/history", params=params)
    if r.status_code != 200:
        return {}
    return {p["timestamp"]: p["value"] for p in r.json()["series"].get(metric, [])}


def _at(minutes: int) -> str:
    return iso(T0 + timedelta(minutes=minutes))


def test_mqtt_batch_with_one_non_finite_reading_keeps_the_others(
    broker: Broker, bridged: httpx.Client
) -> None:
    """The MQTT payload is the HTTP body (docs): a reading with ``1e999`` or ``NaN`` is rejected
    on its own and the valid readings of the same message are stored."""
    device = uid("mq")
    topic = f"avila/default/{device}/telemetry"
    probe = json.dumps({"timestamp": _at(0), "metrics": {"a": 0}})
    wait_for(lambda: publish(broker, topic, message=probe) or _history(bridged, device, "a"))
    publish(
        broker,
        topic,
        message=(
            f'{{"readings": [{{"timestamp": "{_at(1)}", "metrics": {{"a": 1}}}},'
            f' {{"timestamp": "{_at(2)}", "metrics": {{"a": 1e999}}}}]}}'
        ),
    )
    publish(
        broker,
        topic,
        message=(
            f'{{"readings": [{{"timestamp": "{_at(3)}", "metrics": {{"a": NaN}}}},'
            f' {{"timestamp": "{_at(4)}", "metrics": {{"a": 4}}}}]}}'
        ),
    )
    # a string value (non_numeric_value): logging its rejection failed, so the message was
    # neither stored nor acknowledged
    publish(
        broker,
        topic,
        message=(
            f'{{"readings": [{{"timestamp": "{_at(5)}", "metrics": {{"a": 5}}}},'
            f' {{"timestamp": "{_at(6)}", "metrics": {{"a": "six"}}}}]}}'
        ),
    )
    sentinel = json.dumps({"timestamp": _at(7), "metrics": {"a": 7}})
    publish(broker, topic, message=sentinel)
    wait_for(lambda: _at(7) in _history(bridged, device, "a"))
    # messages are appended to the log in arrival order: the sentinel loaded, the rest is too
    assert _history(bridged, device, "a") == {
        _at(0): 0,
        _at(1): 1,
        _at(4): 4,
        _at(5): 5,
        _at(7): 7,
    }


def _sp_metric(name: str, value: float, ts_ms: int | None = None) -> bytes:
    """A Sparkplug B Metric (Double), encoded from the published field numbers."""
    body = _key(1, 2) + _varint(len(name.encode())) + name.encode()
    if ts_ms is not None:
        body += _key(3, 0) + _varint(ts_ms)
    body += _key(4, 0) + _varint(10) + _key(13, 1) + struct.pack("<d", value)
    return _key(2, 2) + _varint(len(body)) + body


def _sp_payload(ts_ms: int, *metrics: bytes) -> bytes:
    return _key(1, 0) + _varint(ts_ms) + b"".join(metrics)


def test_sparkplug_readings_are_validated_like_http_ones(
    broker: Broker, bridged: httpx.Client, tmp_path: Path
) -> None:
    """Sparkplug readings follow the reading schema (device id 1..256 chars, metric names up to
    128): an empty edge node id or an overlong metric name is rejected, not stored; a metric
    timestamp past year 9999 rejects its reading (``timestamp_in_future``), not the message."""
    edge = uid("edge")
    t = int(T0.timestamp() * 1000)

    def send(topic: str, payload: bytes) -> None:
        path = tmp_path / f"{uuid.uuid4().hex}.bin"
        path.write_bytes(payload)
        publish(broker, topic, file=path)

    node = f"spBv1.0/default/NDATA/{edge}"
    wait_for(
        lambda: (
            send(node, _sp_payload(t, _sp_metric("probe", 1.0))) or _history(bridged, edge, "probe")
        )
    )
    send("spBv1.0/default/NDATA/", _sp_payload(t, _sp_metric("nameless", 1.0)))
    long_name = "m" * 200
    send(node, _sp_payload(t + 60_000, _sp_metric(long_name, 2.0)))
    send(
        node,
        _sp_payload(
            t + 120_000,
            _sp_metric("ok", 3.0),
            _sp_metric("late", 4.0, ts_ms=2**63),  # year 292 million
        ),
    )
    send(node, _sp_payload(t + 180_000, _sp_metric("done", 1.0)))
    wait_for(lambda: _history(bridged, edge, "done"))
    assert _history(bridged, edge, "ok") == {iso(T0 + timedelta(minutes=2)): 3.0}
    reported = bridged.get(f"{I40}/twin/{edge}").json()["reported"]
    assert set(reported) == {"probe", "ok", "done"}
    devices = bridged.get(f"{I40}/devices").json()["devices"]
    assert "" not in {d["device_id"] for d in devices}
