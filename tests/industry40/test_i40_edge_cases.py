"""Edge cases of the Industry 4.0 KPIs: bad time zones, huge or naive timestamps, overlapping
alarm rules. Each oracle is independent of the code under test (plain Python arithmetic or the
documented error contract)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from avila.errors import ValidationFailed
from avila.industry40.energy import energy_consumption
from avila.industry40.maintenance import predict_maintenance

I40 = "/api/v1/industry40"


def uid(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- energy: a time zone that names a directory of the tz database ---------------------------


def _power_rows(device: str = "press") -> list[dict[str, Any]]:
    t0 = datetime(2025, 3, 3, tzinfo=UTC)
    return [
        {"device_id": device, "timestamp": t0 + timedelta(minutes=k), "power_kw": 60.0}
        for k in range(3)
    ]


@pytest.mark.parametrize("tz", ["America", "Etc", "x" * 300, "zone.tab"])
def test_energy_unknown_time_zone_is_a_validation_error(tz: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        energy_consumption(_power_rows(), tz=tz)
    assert err.value.code == "energy_unknown_timezone"


def test_energy_endpoint_answers_422_for_a_directory_time_zone(client: httpx.Client) -> None:
    device = uid("meter")
    now = datetime.now(UTC).replace(microsecond=0)
    readings = [
        {
            "device_id": device,
            "timestamp": iso(now - timedelta(minutes=k)),
            "metrics": {"power_kw": 6},
        }
        for k in range(3)
    ]
    r = client.post(f"{I40}/iot/ingest", json={"readings": readings})
    assert r.status_code == 202, r.text
    ok = client.get(f"{I40}/energy/consumption", params={"device_id": device, "tz": "Europe/Paris"})
    assert ok.status_code == 200, ok.text
    # 2 minutes at 6 kW = 0.2 kWh
    assert ok.json()["total_kwh"] == pytest.approx(6 * 2 / 60)
    bad = client.get(f"{I40}/energy/consumption", params={"device_id": device, "tz": "Europe"})
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["code"] == "energy_unknown_timezone"


# --- maintenance: timestamps ------------------------------------------------------------------


def test_maintenance_huge_epoch_timestamps_are_a_validation_error() -> None:
    """Epoch seconds far past any datetime (1e300) must be a 422, not a LinAlgError (500)."""
    body = {
        "device_id": "d",
        "metrics": {
            "v": {
                "timestamps": [float(k) for k in range(9)] + [1e300],
                "values": [float(k) for k in range(1, 11)],
                "failure_threshold": 20.0,
            }
        },
    }
    with pytest.raises(ValidationFailed) as err:
        predict_maintenance(body)
    assert err.value.code == "maintenance_invalid_timestamp"
    assert err.value.details[0]["path"] == "$.metrics.v.timestamps[9]"


@pytest.fixture
def local_tz_with_dst() -> Iterator[None]:
    """The server's local time zone set to one with a DST change (restored afterwards)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        yield
    finally:
        mp.undo()
        time.tzset()


def test_maintenance_naive_timestamps_are_utc_whatever_the_local_zone(
    local_tz_with_dst: None,
) -> None:
    """Naive timestamps are UTC (docs/industry40.md). A linear rise of 1 per hour across the
    New York DST change (2025-03-09 07:00 UTC, in the middle of the series) reaches 100 from
    50 in exactly 50 h; read as local time, the series gets a one-hour hole and another RUL."""
    t0 = datetime(2025, 3, 8, 6, 0)  # naive, UTC
    stamps = [t0 + timedelta(hours=k) for k in range(51)]
    values = [float(k) for k in range(51)]  # 0 .. 50, +1 per hour
    body = {
        "device_id": "d",
        "metrics": {
            "v": {
                "timestamps": [s.isoformat() for s in stamps],
                "values": values,
                "failure_threshold": 100.0,
                "direction": "increasing",
            }
        },
    }
    out = predict_maintenance(body)
    # oracle: value 50 now, slope 1/h, threshold 100 -> 50 h
    assert out["rul_hours"] == pytest.approx(50.0, abs=1e-6)
    metric = out["contributing_metrics"][0]
    assert metric["trend_per_hour"] == pytest.approx(1.0, rel=1e-9)


# --- alarms: a warning and a critical limit on the same metric --------------------------------


def test_warning_and_critical_limits_on_one_metric(client: httpx.Client) -> None:
    """A value above the warning limit (10) but below the critical one (15) is in alarm; the
    critical rule, not in breach, must not clear the alarm the warning rule raised."""
    device_type = uid("type")
    rules = {
        "rules": [
            {"metric": "vib", "max": 10, "severity": "warning"},
            {"metric": "vib", "max": 15, "severity": "critical"},
        ]
    }
    assert client.put(f"{I40}/alarms/rules/{device_type}", json=rules).status_code == 200
    device = uid()

    def send(value: float) -> list[dict[str, Any]]:
        r = client.post(
            f"{I40}/iot/ingest",
            json={"device_id": device, "device_type": device_type, "metrics": {"vib": value}},
        )
        assert r.status_code == 202, r.text
        alarms = client.get(f"{I40}/alarms/active").json()["alarms"]
        return [a for a in alarms if a["device_id"] == device]

    assert send(5) == []
    warn = send(12)
    assert [(a["metric"], a["bound"], a["severity"], a["limit"]) for a in warn] == [
        ("vib", "max", "warning", 10.0)
    ]
    assert len(send(20)) == 1  # still in alarm (no second alarm for the same bound)
    assert len(send(12)) == 1  # still above the warning limit: not cleared
    assert send(5) == []
    # a first breach above both limits is raised at the critical one
    crit = send(20)
    assert [(a["severity"], a["limit"], a["value"]) for a in crit] == [("critical", 15.0, 20.0)]
    assert send(9) == []
