"""A device's ``first_seen`` / ``last_seen`` after each request's readings, against a plain
Python oracle: readings out of order, late readings older than anything seen, equal times,
unicode ids, a device of another project, and a device the registry does not know."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from avila.industry40.devices import DeviceRegistry
from avila.industry40.telemetry import Reading, build_rows
from avila.storage.duckdb.store import DuckDBStore

T0 = datetime(2024, 5, 1, tzinfo=UTC)
IDS = ["press-1", "press-2", "Prüfstand-ü", "炉-3", "a b"]


def _us(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_seen_times_follow_every_request_as_an_oracle_says(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "store.duckdb")
    try:
        registry = DeviceRegistry(store)
        rnd = random.Random(7)
        seen: dict[tuple[str, str], list[int]] = {}  # the oracle: (first, last) per device
        now = T0 + timedelta(days=30)
        for request in range(40):
            project = "p" if request % 5 else "other"
            readings = []
            for _ in range(rnd.randrange(1, 60)):
                # most readings move forward; some are late, older than all before them
                offset = rnd.choice([request * 3600 + rnd.randrange(0, 600), rnd.randrange(0, 5)])
                readings.append(
                    Reading(
                        device_id=rnd.choice(IDS),
                        metrics={"t": 1.0},
                        timestamp=T0 + timedelta(seconds=offset),
                    )
                )
            rows, rejected = build_rows(project, list(enumerate(readings)), now=now)
            assert not rejected
            registry.claim_new(rows)  # registers unseen devices, as the ingest path does
            if request == 0:
                registry.forget([(project, IDS[0])])  # a device the registry no longer knows
            registry.touch(rows)
            for reading in readings:
                key = (project, reading.device_id)
                if request == 0 and key == (project, IDS[0]):
                    continue
                t = _us(reading.timestamp)
                first, last = seen.get(key, [t, t])
                seen[key] = [min(first, t), max(last, t)]
        for (project, device_id), (first, last) in seen.items():
            device = registry.get(project, device_id)
            assert device is not None
            assert (device.first_seen_us, device.last_seen_us) == (first, last), device_id
    finally:
        store.close()
