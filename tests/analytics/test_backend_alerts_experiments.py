"""Alert anomaly windows and experiment buckets computed in SQL, on every backend, against
plain Python (hashlib for buckets; a loop over the rows for windows)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from analytics_data import PROJECT, event, to_table

from avila.alerts.rules import BASELINE_WINDOWS, anomaly_series
from avila.experiments.assignment import bucket, bucket_sql
from avila.storage import Store


def test_experiment_buckets_in_sql_equal_hashlib(store: Store) -> None:
    users = ["u1", "ü-ñ-中", "", "x" * 300, "a\x1fb", "'; DROP TABLE events; --", "%s?"]
    expr = bucket_sql(store, "u", "proj-1", "checkout-ü")
    got = [
        store.query(f"SELECT {expr.sql} FROM (SELECT ? AS u) AS t", [*expr.params, u])[0][0]
        for u in users
    ]
    assert got == [bucket("proj-1", "checkout-ü", u) for u in users]


def test_anomaly_windows_equal_a_python_count(store: Store) -> None:
    rng = random.Random(7)
    now = datetime(2026, 3, 29, 1, 30)  # a DST night in Europe: windows are plain UTC spans
    width = 600
    rows = []
    for _ in range(400):
        ts = now - timedelta(seconds=rng.randint(0, width * (BASELINE_WINDOWS + 2)))
        kind = rng.choice(["page_view", "purchase"])
        extra = {"revenue": rng.choice([0.5, 10.0, 1e12])} if kind == "purchase" else {}
        rows.append(event(f"u{rng.randint(1, 9)}", ts, kind, **extra))
    rows.append(event("edge", now, "page_view"))  # ts == now belongs to the current window
    store.append_events(to_table(rows))

    def oracle(series: str) -> list[float]:
        values = [0.0] * (BASELINE_WINDOWS + 1)
        since = now - timedelta(seconds=width * (BASELINE_WINDOWS + 1))
        for row in rows:
            if not since <= row["ts"] <= now:
                continue
            if series == "revenue" and row["event_type"] != "purchase":
                continue
            age_us = (now - row["ts"]) // timedelta(microseconds=1)
            k = max(0, (age_us - 1) // (width * 1_000_000))
            if k <= BASELINE_WINDOWS:
                values[BASELINE_WINDOWS - k] += 1.0 if series == "events" else row["revenue"]
        return values

    for series in ("events", "revenue"):
        assert anomaly_series(store, PROJECT, series, now, width) == oracle(series), series
