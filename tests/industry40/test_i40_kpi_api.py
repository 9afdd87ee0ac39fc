"""The KPI endpoints over recorded telemetry, checked against hand-computed oracles."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

I40 = "/api/v1/industry40"


def uid(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ingest(client: httpx.Client, readings: list[dict[str, Any]]) -> None:
    response = client.post(f"{I40}/iot/ingest", json={"readings": readings})
    assert response.status_code == 202 and not response.json()["rejected"], response.text


def test_oee_from_recorded_states_and_counts(client: httpx.Client) -> None:
    device = uid("press")
    day = datetime(2026, 5, 4, tzinfo=UTC)
    at = lambda h, m=0: iso(day + timedelta(hours=h, minutes=m))  # noqa: E731
    states = [
        (10, 0, 3),
        (10, 30, 4),
        (10, 45, 1),
        (12, 0, 0),
        (12, 47, 1),
        (16, 0, 2),
        (16, 10, 1),
    ]
    readings: list[dict[str, Any]] = [
        {
            "device_id": device,
            "device_type": "press",
            "timestamp": at(9),
            "metrics": {"state": 3},
            "attributes": {"ideal_cycle_time_ms": 1000},
        }
    ]
    readings += [
        {"device_id": device, "timestamp": at(h, m), "metrics": {"state": s}} for h, m, s in states
    ]
    # 19,400 units in 97 readings of 200 (4 rejects each), one per 4 min of run time
    readings += [
        {"device_id": device, "timestamp": at(11, 0) + "", "metrics": {"units_good": 0}},
    ]
    for k in range(97):
        t = day + timedelta(hours=12, minutes=50) + timedelta(minutes=2 * k)
        readings.append(
            {
                "device_id": device,
                "timestamp": iso(t),
                "metrics": {"units_good": 196, "units_rejected": 4},
            }
        )
    ingest(client, readings)
    body = {"device_id": device, "start_time": at(10), "end_time": at(18)}
    out = client.post(f"{I40}/oee/calculate", json=body)
    assert out.status_code == 200, out.text
    r = out.json()
    ppt, run = 450.0, 450.0 - 47 - 15  # minutes: 8 h - 30 min break; minus down and setup
    total, good = 19_400, 19_012
    assert r["availability"] == pytest.approx(run / ppt)
    assert r["performance"] == pytest.approx(1.0 * total / (run * 60))
    assert r["quality"] == pytest.approx(good / total)
    assert r["oee"] == pytest.approx(good * 1.0 / (ppt * 60))
    assert r["teep"] == pytest.approx(r["oee"] * ppt / 480)
    assert r["losses"]["equipment_failure_hours"] == pytest.approx(47 / 60)
    assert r["losses"]["setup_and_adjustments_hours"] == pytest.approx(15 / 60)


def test_oee_seed_body_and_errors(client: httpx.Client) -> None:
    body = {
        "device_id": "press_1",
        "production_data": {
            "planned_production_time_hours": 7.0,
            "actual_runtime_hours": 373 / 60,
            "ideal_cycle_time_ms": 1000,
            "total_units_produced": 19_271,
            "good_units": 18_848,
            "defects": 423,
        },
    }
    r = client.post(f"{I40}/oee/calculate", json=body).json()
    assert round(100 * r["oee"], 2) == 74.79
    bad = client.post(f"{I40}/oee/calculate", json={"device_id": uid()})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "oee_needs_data"
    unknown = client.post(
        f"{I40}/oee/calculate", json={"device_id": uid(), "start_time": "2026-01-01T00:00:00Z"}
    )
    assert unknown.status_code == 404


def test_energy_from_power_readings(client: httpx.Client) -> None:
    device = uid("meter")
    start = datetime(2026, 6, 1, tzinfo=UTC)
    readings = [
        {
            "device_id": device,
            "timestamp": iso(start + timedelta(minutes=5 * i)),
            "metrics": {"power_kw": 10.0 if i < 12 else 20.0},
        }
        for i in range(25)
    ]
    ingest(client, readings)
    params = {
        "device_id": device,
        "start_time": iso(start),
        "end_time": iso(start + timedelta(hours=2, seconds=1)),
        "co2_kg_per_kwh": 0.5,
    }
    r = client.get(f"{I40}/energy/consumption", params=params)
    assert r.status_code == 200, r.text
    dev = r.json()["devices"][0]
    assert dev["kwh"] == pytest.approx(30.0)  # 1 h at 10 kW + 1 h at 20 kW
    assert dev["peak_demand_kw"] == pytest.approx(20.0)
    assert dev["co2_kg"] == pytest.approx(15.0)
    none = client.get(f"{I40}/energy/consumption", params={"device_id": uid()})
    assert none.status_code == 422 and none.json()["error"]["code"] == "energy_no_data"


def test_maintenance_from_telemetry_uses_alarm_threshold_and_repairs(client: httpx.Client) -> None:
    device_type = uid("bearing")
    rules = {"rules": [{"metric": "vibration", "max": 10.0, "severity": "critical"}]}
    assert client.put(f"{I40}/alarms/rules/{device_type}", json=rules).status_code == 200
    device = uid("spindle")
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=100)
    at = lambda h: iso(base + timedelta(hours=h))  # noqa: E731
    readings: list[dict[str, Any]] = [
        {
            "device_id": device,
            "device_type": device_type,
            "timestamp": at(0),
            "metrics": {"state": 1},
        },
        {"device_id": device, "timestamp": at(50), "metrics": {"state": 0}},  # failure
        {"device_id": device, "timestamp": at(52), "metrics": {"state": 1}},  # repaired
    ]
    # the old bearing, worn out before the repair: must not enter the trend
    readings += [
        {
            "device_id": device,
            "timestamp": at(30 + h * 0.5),
            "metrics": {"vibration": 9.0 + 0.02 * h},
        }
        for h in range(40)
    ]
    readings += [
        {"device_id": device, "timestamp": at(53 + k), "metrics": {"vibration": 2.0 + 0.1 * k}}
        for k in range(41)
    ]
    ingest(client, readings)
    r = client.post(f"{I40}/maintenance/predict", json={"device_id": device})
    assert r.status_code == 200, r.text
    out = r.json()
    # value 6.0 at the last reading, rising 0.1 / h towards 10.0: 40 h left
    assert out["rul_hours"] == pytest.approx(40.0, abs=1.0)
    # certain to fail within the default 168 h horizon; not within 24 h, but RUL <= 72 h: high
    # at any horizon (it was "critical" at 168 h, "high" at 24 h before the bands got windows)
    assert out["failure_probability"] == pytest.approx(1.0) and out["risk_level"] == "high"
    short = client.post(
        f"{I40}/maintenance/predict", json={"device_id": device, "horizon_hours": 24}
    ).json()
    assert short["failure_probability"] == pytest.approx(0.0) and short["risk_level"] == "high"
    lo, hi = out["rul_interval_hours"]
    assert lo - 1e-6 <= out["rul_hours"] <= hi + 1e-6
    assert out["contributing_metrics"][0]["threshold_source"] == "given"
    rel = out["reliability"]
    assert rel["failures"] == 1
    assert rel["mttr_hours"] == pytest.approx(2.0)
    assert rel["mtbf_hours"] == pytest.approx(720.0 - 2.0)


def test_quality_inspect_xbar_r(client: httpx.Client) -> None:
    body = {"subgroups": [[1, 2, 3], [2, 3, 4], [3, 4, 5]], "usl": 9, "lsl": -3}
    r = client.post(f"{I40}/quality/inspect", json=body).json()
    assert r["chart"] == "xbar_r"
    assert r["center_line"] == pytest.approx(3.0)
    assert r["ucl"] == pytest.approx(3.0 + 1.023 * 2)
    assert r["dispersion"]["ucl"] == pytest.approx(2.574 * 2)
    assert r["cp"] == pytest.approx(12 / (6 * 2 / 1.693))
    bad = client.post(f"{I40}/quality/inspect", json={"values": [1, "x"]})
    assert bad.status_code == 422 and bad.json()["error"]["details"]


def test_optimize_production_feasible_and_infeasible(client: httpx.Client) -> None:
    orders = [
        {"id": "A", "processing_minutes": {"m1": 60}, "deadline_minute": 60},
        {"id": "B", "processing_minutes": {"m1": 60}, "deadline_minute": 60},
    ]
    bad = client.post(f"{I40}/optimize/production", json={"orders": orders})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "schedule_infeasible" and "deadline" in error["message"]
    assert {d["path"] for d in error["details"]} <= {
        "orders[0].deadline_minute",
        "orders[1].deadline_minute",
    }
    orders[1]["processing_minutes"] = {"m1": 60, "m2": 45}
    ok = client.post(f"{I40}/optimize/production", json={"orders": orders, "time_limit_s": 5})
    assert ok.status_code == 200, ok.text
    assert ok.json()["objective_value"] == 60 and ok.json()["status"] == "optimal"


def test_anomaly_detect_series_and_device(client: httpx.Client) -> None:
    values = [10.0 + 0.1 * (i % 5) for i in range(60)]
    values[45] = 30.0
    r = client.post(f"{I40}/anomaly/detect", json={"values": values, "window": 20}).json()
    assert [a["index"] for a in r["anomalies"]] == [45]
    device = uid()
    start = datetime(2026, 2, 1, tzinfo=UTC)
    ingest(
        client,
        [
            {
                "device_id": device,
                "timestamp": iso(start + timedelta(minutes=i)),
                "metrics": {"t": v},
            }
            for i, v in enumerate(values)
        ],
    )
    body = {
        "device_id": device,
        "metric": "t",
        "start_time": iso(start),
        "end_time": iso(start + timedelta(hours=2)),
        "window": 20,
    }
    out = client.post(f"{I40}/anomaly/detect", json=body).json()
    assert [(a["index"], a["timestamp"]) for a in out["anomalies"]] == [
        (45, iso(start + timedelta(minutes=45)))
    ]
