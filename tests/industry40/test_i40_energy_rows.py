"""``records.energy_rows``: each energy row carries the machine state in force at its time —
the last ``state`` reading at or before it, per device — checked against plain Python."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from avila.industry40 import records
from avila.storage.duckdb.store import DuckDBStore

T0 = datetime(2026, 3, 29, 0, 0)  # a DST change in Europe; the store is UTC-naive throughout


def _store(tmp_path: Path, rows: list[tuple[str, datetime, str, float]]) -> DuckDBStore:
    store = DuckDBStore(str(tmp_path / "energy.duckdb"))
    table = pa.table(
        {
            "project_id": ["p"] * len(rows),
            "device_id": [r[0] for r in rows],
            "ts": pa.array([r[1] for r in rows], pa.timestamp("us")),
            "metric": [r[2] for r in rows],
            "value": [r[3] for r in rows],
            "received_at": pa.array([T0] * len(rows), pa.timestamp("us")),
        }
    )
    store.append_table("telemetry", table)
    return store


def _oracle_state(states: list[tuple[datetime, float]], at: datetime) -> float | None:
    before = [(t, v) for t, v in states if t <= at]
    return max(before)[1] if before else None


def test_each_energy_row_gets_the_last_state_at_or_before_it(tmp_path: Path) -> None:
    rng = random.Random(7)
    rows: list[tuple[str, datetime, str, float]] = []
    states: dict[str, list[tuple[datetime, float]]] = {"m1": [], "m2": []}
    for dev in ("m1", "m2"):
        # a state long before the window carries into it (m1 only); m2 starts stateless
        if dev == "m1":
            rows.append((dev, T0 - timedelta(days=3), "state", 2.0))
            states[dev].append((T0 - timedelta(days=3), 2.0))
        for i in range(240):
            t = T0 + timedelta(minutes=i)
            rows.append((dev, t, "power_kw", rng.uniform(0, 50)))
            if rng.random() < 0.2 and not (dev == "m2" and i < 10):
                # half the state changes land on the same instant as a power reading (a tie:
                # the state counts), the rest between readings
                ts = t if rng.random() < 0.5 else t + timedelta(seconds=30)
                value = float(rng.choice([0, 1, 2, 3]))
                rows.append((dev, ts, "state", value))
                states[dev].append((ts, value))
    store = _store(tmp_path, rows)
    got = records.energy_rows(store, "p", None, T0, T0 + timedelta(hours=4))
    assert len(got) == 480
    for dev, t_us, kw, kwh, state in got:
        at = records.from_us(t_us).replace(tzinfo=None)
        assert kwh is None and kw is not None
        assert state == _oracle_state(states[dev], at), (dev, at)
    assert [s for d, _, _, _, s in got if d == "m2"][:10] == [None] * 10
    assert [d for d, *_ in got] == sorted(d for d, *_ in got)


def test_bucketed_rows_take_the_state_at_the_bucket_start(tmp_path: Path) -> None:
    rows = [("m", T0 + timedelta(seconds=10 * i), "power_kw", 5.0) for i in range(36)]
    rows += [("m", T0 + timedelta(seconds=90), "state", 1.0)]
    rows += [("m", T0 + timedelta(minutes=4), "state", 0.0)]
    store = _store(tmp_path, rows)
    got = records.energy_rows(store, "p", "m", T0, T0 + timedelta(minutes=6), bucket_us=60_000_000)
    assert [s for *_, s in got] == [None, None, 1.0, 1.0, 0.0, 0.0]
