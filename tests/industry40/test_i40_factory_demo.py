"""The factory demo: deterministic, written through the telemetry path, feeds every endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
from tests.conftest import TEST_KEY

from avila.demo.factory import readings

I40 = "/api/v1/industry40"


def test_same_seed_same_plant() -> None:
    end = datetime(2026, 3, 3, tzinfo=UTC)  # Monday: two shifts
    first = [msgspec.to_builtins(r) for h in readings(7, 1, 2, 1, end) for r in h]
    again = [msgspec.to_builtins(r) for h in readings(7, 1, 2, 1, end) for r in h]
    other = [msgspec.to_builtins(r) for h in readings(8, 1, 2, 1, end) for r in h]
    assert first == again and first != other
    assert {r["device_id"] for r in first} == {"L1-M1", "L1-M2", "L1-M1-VIB", "L1-M2-VIB"}


def test_demo_data_answers_every_endpoint(tmp_path: Path, make_server: Callable[..., Any]) -> None:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    env = {**os.environ, "AVILA_DATA_DIR": str(tmp_path)}
    env.pop("AVILA_STORAGE_URL", None)
    args = ["--days", "3", "--lines", "1", "--machines", "2", "--end", end.isoformat()]
    cmd = [sys.executable, "-m", "avila.cli", "demo-factory", *args]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "readings stored" in done.stderr
    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "already has devices" in again.stderr
    server = make_server(data_dir=tmp_path)
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=60) as c:
        tree = c.get(f"{I40}/topology").json()
        machines = tree["sites"][0]["lines"][0]["machines"]
        assert [m["machine"] for m in machines] == ["L1-M1", "L1-M2"]
        twin = c.get(f"{I40}/twin/L1-M1").json()
        assert set(twin["reported"]) == {
            "state",
            "units_good",
            "units_rejected",
            "power_kw",
            "energy_kwh",
        }
        window = {
            "start_time": (end - timedelta(days=2)).isoformat(),
            "end_time": end.isoformat(),
        }
        oee = c.post(f"{I40}/oee/calculate", json={"device_id": "L1-M1", **window})
        assert oee.status_code == 200, oee.text
        assert 0 < oee.json()["oee"] < 1
        energy = c.get(f"{I40}/energy/consumption", params={"co2_kg_per_kwh": 0.2, **window})
        assert energy.status_code == 200, energy.text
        assert {d["device_id"] for d in energy.json()["devices"]} == {"L1-M1", "L1-M2"}
        risk = c.post(f"{I40}/maintenance/predict", json={"device_id": "L1-M1-VIB"})
        assert risk.status_code == 200, risk.text
        assert risk.json()["risk_level"] in ("low", "medium", "high", "critical")
        assert risk.json()["reliability"]["state_source"] == "L1-M1"
        body = {"device_id": "L1-M1-VIB", "metric": "vibration_mm_s", **window}
        assert c.post(f"{I40}/anomaly/detect", json=body).status_code == 200
        forecast = c.get(f"{I40}/twin/L1-M2-VIB/forecast", params={"metric": "bearing_temp_c"})
        assert forecast.status_code == 200, forecast.text
