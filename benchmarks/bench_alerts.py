"""Alert evaluation cost: one rule's metric over its window, per kind and window length.

    .venv/bin/python benchmarks/bench_alerts.py                     # 10 M events, 1 M readings
    .venv/bin/python benchmarks/bench_alerts.py --events 1000000 --runs 5

The scheduler evaluates every rule once a second (AVILA_ALERTS_INTERVAL_SECONDS), so the figure
that matters is the time of one evaluation and of one round of rules. Builds (once, cached under
./data/bench/) the synthetic e-commerce events of bench_analytics.py (120 days, time-ordered)
plus a plant of 100 devices (2 types) reporting `temperature` once a minute for 7 days, then
prints the median wall time of :func:`avila.alerts.rules.evaluate` (after one warm-up) for each
metric kind and window, evaluated at the end of the data, through the store process like the
server does.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_analytics import END, PROJECT, generate, median_seconds  # noqa: E402

from avila.alerts.rules import (  # noqa: E402
    AnomalyMetric,
    ConversionRateMetric,
    EventCountMetric,
    Metric,
    TelemetryMetric,
    evaluate,
)
from avila.schemas.analytics import EventCondition  # noqa: E402
from avila.storage import open_store  # noqa: E402
from avila.storage.base import Store  # noqa: E402

DEVICES = 100
READING_DAYS = 7


def generate_telemetry(store: Store) -> int:
    minutes = READING_DAYS * 24 * 60
    start = np.datetime64(END - timedelta(days=READING_DAYS), "us")
    ts = start + (np.arange(minutes) * 60_000_000).astype("timedelta64[us]")
    rng = np.random.default_rng(7)
    for d in range(DEVICES):
        n = len(ts)
        table = pa.table(
            {
                "project_id": pa.array([PROJECT] * n),
                "device_id": pa.array([f"dev-{d}"] * n),
                "ts": pa.array(ts, pa.timestamp("us")),
                "metric": pa.array(["temperature"] * n),
                "value": pa.array(rng.normal(70, 8, n)),
                "received_at": pa.array(ts, pa.timestamp("us")),
            }
        )
        store.append_table("telemetry", table)
    devices = pa.table(
        {
            "project_id": pa.array([PROJECT] * DEVICES),
            "device_id": pa.array([f"dev-{d}" for d in range(DEVICES)]),
            "device_type": pa.array(["press" if d % 2 else "oven" for d in range(DEVICES)]),
        }
    )
    store.append_table("devices", devices)
    return DEVICES * minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=Path("data/bench"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"alerts_{args.events}.duckdb"
    fresh = not path.exists()
    store = open_store("duckdb:///" + str(path))
    if fresh:
        t0 = time.perf_counter()
        generate(store, args.events)
        readings = generate_telemetry(store)
        print(f"generated {args.events:,} events, {readings:,} readings in"
              f" {time.perf_counter() - t0:.1f} s -> {path}")  # fmt: skip
    (events,) = store.query("SELECT count(*) FROM events")
    (readings,) = store.query("SELECT count(*) FROM telemetry")
    print(f"{events[0]:,} events, {readings[0]:,} readings in {path}; median of {args.runs} runs")
    cart, buy = EventCondition("add_to_cart"), EventCondition("purchase")
    cases: list[tuple[str, Metric]] = [
        ("event_count page_view /", EventCountMetric("page_view", "/")),
        ("conversion add_to_cart->purchase", ConversionRateMetric([cart, buy])),
        ("telemetry max, all devices", TelemetryMetric("temperature", "max")),
        ("telemetry avg, device_type", TelemetryMetric("temperature", "avg", device_type="press")),
        ("telemetry last, one device", TelemetryMetric("temperature", "last", device_id="dev-7")),
        ("anomaly events", AnomalyMetric("events")),
        ("anomaly revenue", AnomalyMetric("revenue")),
    ]
    windows = (300, 3600, 86_400)
    print(f"{'metric':<36}" + "".join(f"{f'{w} s':>12}" for w in windows))
    round_total = dict.fromkeys(windows, 0.0)
    for name, metric in cases:
        row = []
        for w in windows:
            seconds = median_seconds(
                lambda m=metric, w=w: evaluate(store, PROJECT, m, w, END), args.runs
            )
            round_total[w] += seconds
            row.append(f"{seconds * 1000:>9.1f} ms")
        print(f"{name:<36}" + "".join(f"{c:>12}" for c in row))
    print(
        f"{'round of these 7 rules':<36}"
        + "".join(f"{round_total[w] * 1000:>9.1f} ms" for w in windows)
    )
    store.close()


if __name__ == "__main__":
    main()
