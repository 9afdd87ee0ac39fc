"""ML training reads and Industry 4.0 telemetry queries give the same answers on DuckDB and on
ClickHouse (chdb): the same generated rows go into both, every query runs on both.

ML: the training inputs (:func:`load_event_data`: daily activity, product interactions incl.
the items of purchases' JSON, purchases), the session prefixes, the anomaly metric series, the
cold-start rates and the open-cart values. Industry 4.0: raw and rolled-up series, thinned
values, latest readings, machine state intervals, unit counts and energy rows (raw and
bucketed). Protocol as the analytics differential test: equal, floats to 1e-9 relative.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from analytics_data import to_table
from tests.analytics.backend_pair import both_stores

from avila.analytics.common import fragments
from avila.industry40 import records
from avila.ml.features import load_event_data, load_session_prefixes
from avila.ml.monitoring import metric_series
from avila.ml.predictions import _COLD_SQL
from avila.ml.training import _open_cart_values
from avila.storage import Store

PROJECT = "mlp"
T0 = datetime(2024, 5, 1)


def _events(seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for n in range(3000):
        user = f"u{rng.randint(0, 60)}"
        ts = T0 + timedelta(minutes=rng.randint(0, 60 * 24 * 40), microseconds=rng.choice([0, 7]))
        etype = rng.choice(["page_view", "product_view", "add_to_cart", "purchase", "custom",
                            "checkout", "search", "remove_from_cart"])  # fmt: skip
        row: dict[str, Any] = {
            "project_id": PROJECT,
            "event_id": f"e{n}",
            "user_id": user,
            "session_id": f"{user}-s{rng.randint(0, 8)}" if rng.random() < 0.8 else None,
            "ts": ts,
            "received_at": ts,
            "event_type": etype,
        }
        if etype in ("product_view", "add_to_cart"):
            row |= {"product_id": f"p{rng.randint(0, 9)}", "price": 9.5, "quantity": 2}
        if etype == "purchase":
            items = [{"product_id": f"p{rng.randint(0, 9)}"} for _ in range(rng.randint(0, 3))]
            items += [{"sku": "no-id"}]
            row |= {
                "revenue": rng.choice([10.0, 99.99, None]),
                "data": json.dumps({"items": items}),
            }
        if etype == "custom":
            row["event_name"] = rng.choice(["Error: payment", "ok"])
        rows.append(row)
    return rows


def _telemetry() -> pa.Table:
    rng = random.Random(9)
    rows: list[tuple[str, datetime, str, float]] = []
    for device in ("m1", "m2"):
        state = 1
        for i in range(0, 6 * 3600, 20):
            ts = T0 + timedelta(seconds=i, microseconds=rng.choice([0, 3]))
            rows.append((device, ts, "temperature", 20 + rng.random() * 5))
            rows.append((device, ts, "power_kw", rng.choice([0.0, 3.5, 7.25])))
            rows.append((device, ts, "energy_kwh", i / 100.0))
            if i % 600 == 0:
                state = rng.choice([0, 1, 1, 2, 3])
                rows.append((device, ts, "state", float(state)))
                rows.append((device, ts, "units_good", float(rng.randint(0, 9))))
                rows.append((device, ts, "units_rejected", float(rng.randint(0, 2))))
    return pa.table(
        {
            "project_id": [PROJECT] * len(rows),
            "device_id": [r[0] for r in rows],
            "ts": pa.array([r[1] for r in rows], pa.timestamp("us")),
            "metric": [r[2] for r in rows],
            "value": [r[3] for r in rows],
            "received_at": pa.array([r[1] for r in rows], pa.timestamp("us")),
        }
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Store]]:
    events, telemetry = to_table(_events()), _telemetry()

    def fill(store: Store) -> None:
        store.append_events(events)
        store.append_table("telemetry", telemetry)

    yield from both_stores(tmp_path_factory, fill)


def _normal(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        frame = value.reset_index(drop=True)
        frame = frame.sort_values(list(frame.columns)).reset_index(drop=True)
        return _normal(frame.astype(object).where(frame.notna(), None).to_dict("records"))
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.9g}")
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _normal(value.item())
    if isinstance(value, records.Interval):
        return (value.state, value.start_us, value.end_us)
    return value


END = T0 + timedelta(days=41)


def _open_carts(store: Store) -> Any:
    data = load_event_data(store, PROJECT, END)
    customers = pd.DataFrame({"open_cart": 1}, index=sorted(set(data.daily["user_id"])))
    return _open_cart_values(store, PROJECT, data, customers).to_dict()


W0, W1 = datetime(2024, 5, 1, 0, 30, tzinfo=UTC), datetime(2024, 5, 1, 5, 10, tzinfo=UTC)
CASES: dict[str, Any] = {
    "daily": lambda s: load_event_data(s, PROJECT, END).daily,
    "interactions": lambda s: load_event_data(s, PROJECT, END).interactions,
    "purchases": lambda s: load_event_data(s, PROJECT, END).purchases,
    "data-default-end": lambda s: (lambda d: (d.start, d.end, len(d.daily)))(
        load_event_data(s, PROJECT)
    ),
    "session-prefixes": lambda s: load_session_prefixes(s, PROJECT, END),
    "metric-series": lambda s: metric_series(s, PROJECT, T0, T0 + timedelta(days=10)),
    "cold-rates": lambda s: s.query(
        _COLD_SQL.format(day=fragments(s)["day_start"].format("ts")), [PROJECT, PROJECT]
    ),
    "open-carts": lambda s: _open_carts(s),
    "series-raw": lambda s: records.series(s, PROJECT, "m1", None, W0, W1, "raw"),
    "series-1m": lambda s: records.series(s, PROJECT, "m1", ["temperature"], W0, W1, "1m"),
    "series-1h": lambda s: records.series(s, PROJECT, "m2", None, W0, W1, "1h"),
    "values-thinned": lambda s: records.values_of(s, PROJECT, "m1", "temperature", W0, W1, max_points=97),
    "latest": lambda s: records.latest(s, PROJECT, "m2"),
    "states": lambda s: records.state_intervals(s, PROJECT, "m1", W0, W1),
    "units": lambda s: records.unit_counts(s, PROJECT, None, W0, W1),
    "energy": lambda s: records.energy_rows(s, PROJECT, "m1", W0, W1),
    "energy-buckets": lambda s: records.energy_rows(s, PROJECT, None, W0, W1, bucket_us=900_000_000),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_duckdb_and_clickhouse_agree(stores: dict[str, Store], name: str) -> None:
    ours = _normal(CASES[name](stores["chdb"]))
    assert ours == _normal(CASES[name](stores["duckdb"]))
    assert ours not in ([], {}, None)  # the case has data to compare
