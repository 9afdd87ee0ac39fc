"""Training from the store on the demo data (planted churn): every model against its baseline."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest

from avila.ingest.validation import validate_events
from avila.live import get_bus
from avila.ml.monitoring import AnomalyLog, metric_series, seasonal_anomalies
from avila.ml.registry import ModelRegistry
from avila.ml.training import InsufficientTrainingData, TrainedModels, train_project
from avila.storage import open_store


@pytest.fixture(scope="module")
def trained(demo_db: Path) -> tuple[TrainedModels, dict[str, Any]]:
    store = open_store(f"duckdb:///{demo_db}", read_only=True)
    stages: list[str] = []
    try:
        artifact, meta = train_project(store, "default", progress=stages.append)
    finally:
        store.close()
    assert stages[0] == "reading events" and stages[-1] == "done"
    return artifact, meta


@pytest.fixture(scope="module")
def purchases(demo_db: Path) -> pd.DataFrame:
    store = open_store(f"duckdb:///{demo_db}", read_only=True)
    try:
        return store.query_arrow(
            "SELECT user_id, unnest(json_extract_string(data, '$.items[*].product_id')) AS item "
            "FROM events WHERE event_type = 'purchase'"
        ).to_pandas()
    finally:
        store.close()


@pytest.mark.parametrize("model", ["churn", "conversion", "session_conversion"])
def test_classifiers_beat_their_baseline_on_a_time_split(trained, model: str) -> None:
    m = trained[1]["models"][model]["metrics"]
    base = m["baseline"]
    assert m["n"] == base["n"] and m["n"] >= 500
    assert m["roc_auc"] > base["roc_auc"]
    assert m["brier"] < base["brier"]  # calibrated *and* sharper than the baseline
    assert m["brier"] < m["brier_base_rate"]
    assert m["pr_auc"] > m["base_rate"]


def test_churn_time_split_never_trains_on_the_test_window(trained) -> None:
    m = trained[1]["models"]["churn"]["metrics"]
    test_t0 = pd.Timestamp(m["test_snapshot"])
    start = pd.Timestamp(m["training_window"]["start"])
    # Training snapshots step weekly back from test_t0 − H; all label windows closed by test_t0.
    weeks = (test_t0 - pd.Timedelta(days=m["horizon_days"]) - start).days // 7 + 1
    assert weeks >= 3 and m["n_train"] > 0
    assert m["horizon_days"] == 14  # 90 days of data allow the full default horizon


def test_predicted_probabilities_are_probabilities(trained) -> None:
    users = trained[0].users
    churn = pd.Series([u["churn_probability"] for u in users.values()])
    conv = pd.Series([u["conversion_probability"] for u in users.values()])
    assert churn.between(0, 1).all() and conv.between(0, 1).all()
    # Calibration in the large: the mean prediction is near the base rate on recent users.
    assert len(users) == trained[1]["users_scored"] > 1000


def test_recommendations_exclude_owned_products(trained, purchases: pd.DataFrame) -> None:
    owned = purchases.groupby("user_id")["item"].agg(set)
    users = trained[0].users
    checked = 0
    for user, items in owned.items():
        recs = {r["product_id"] for r in users[user]["recommendations"]}
        assert not recs & items
        checked += 1
    assert checked > 500
    m = trained[1]["models"]["recommendations"]["metrics"]
    assert {"precision@10", "ndcg@10", "baseline"} <= set(m)
    also = trained[0].also_bought
    assert also and all(p not in [i for i, _ in also[p]] for p in also)


def test_clv_beats_the_past_rate_on_a_holdout(trained) -> None:
    m = trained[1]["models"]["clv"]["metrics"]
    assert m["holdout_mae"] < m["baseline"]["holdout_mae"]
    assert set(m["bgnbd"]) == {"r", "alpha", "a", "b"}
    for record in trained[0].users.values():
        clv = record["clv"]
        assert 0 <= clv["p_alive"] <= 1 and clv["clv_12m"] >= 0


def test_next_best_action_respects_eligibility(trained) -> None:
    actions = set()
    for record in trained[0].users.values():
        nba = record["next_best_action"]
        actions.add(nba["action"])
        assert nba["reason"]
        if nba["action"] == "win_back_offer":
            assert record["churn_probability"] >= 0.5
        if nba["action"] == "no_action":
            assert nba["expected_value"] == 0
        else:
            assert nba["expected_value"] > 0
    assert {"win_back_offer", "cart_reminder", "cross_sell", "no_action"} <= actions


def test_too_little_data_names_what_is_missing(tmp_path: Path) -> None:
    store = open_store(f"duckdb:///{tmp_path / 'empty.duckdb'}")
    try:
        with pytest.raises(InsufficientTrainingData) as info:
            train_project(store, "default")
    finally:
        store.close()
    err = info.value
    assert err.status == 422 and err.code == "insufficient_training_data"
    assert {d["path"] for d in err.details} >= {"users", "history_days", "purchases"}


def test_registry_keeps_versions_and_reloads(tmp_path: Path, trained) -> None:
    registry = ModelRegistry(tmp_path / "models", keep_artifacts=1)
    first = registry.save("default", trained[0], trained[1])
    second = registry.save("default", trained[0], trained[1])
    assert (first["version"], second["version"]) == (1, 2)
    fresh = ModelRegistry(tmp_path / "models")
    meta, artifact = fresh.load_latest("default")
    assert meta["version"] == 2 and artifact.users == trained[0].users
    assert [r["version"] for r in fresh.runs("default")] == [1, 2]
    assert not (tmp_path / "models" / "default" / first["artifact"]).exists()


def _spike_rows(at: datetime, n: int) -> Any:
    raws = [
        msgspec.json.encode(
            {
                "event_id": f"spike-{i}",
                "user_id": f"bot_{i % 7}",
                "timestamp": (at + timedelta(seconds=i % 3000)).isoformat(),
                "event_type": {"type": "PageView", "data": {"url": "/", "title": "x"}},
            }
        )
        for i in range(n)
    ]
    rows, rejected = validate_events(raws, "default")
    assert not rejected
    return rows


def test_planted_traffic_spike_is_detected_stored_and_published(
    demo_db: Path, tmp_path: Path
) -> None:
    path = tmp_path / "spike.duckdb"
    shutil.copy(demo_db, path)
    spike = datetime(2025, 2, 26, 14)
    store = open_store(f"duckdb:///{path}")
    try:
        store.append_events(_spike_rows(spike, 2000).to_arrow())
        hourly = metric_series(store, "default", datetime(2024, 12, 1), datetime(2025, 3, 1))
    finally:
        store.close()
    found, detectors = seasonal_anomalies(hourly, window_hours=168)
    hits = [a for a in found if a["bucket_start"] == "2025-02-26T14:00:00Z"]
    assert {a["metric"] for a in hits} >= {"events.page_view", "events.all"}
    assert all(a["value"] > a["upper"] for a in hits)
    # The demo plants its own anomaly (a flash sale at 15:00 two days before its end).
    flash = [a for a in found if a["bucket_start"] == "2025-02-27T15:00:00Z"]
    assert "events.all" in {a["metric"] for a in flash}
    false_alarms = len(found) - len(hits) - len(flash)
    assert false_alarms < 0.01 * 168 * len(hourly.columns)  # few false alarms

    store = open_store(f"duckdb:///{tmp_path / 'log.duckdb'}")
    try:
        log = AnomalyLog(store)
        new = log.add("default", found)
        assert len(new) == len(found) and log.add("default", found) == []
        listed = log.query("default", metric="events.page_view", since="2025-02-26T00:00:00Z")
        assert "2025-02-26T14:00:00Z" in {a["bucket_start"] for a in listed}
        assert log.query("other") == []
    finally:
        store.close()

    from avila.api.ml import _publish

    state: dict[str, Any] = {}
    bus = get_bus(state)
    sub = bus.subscribe("default", ["alerts"])
    recent = {**hits[0], "bucket_start": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    _publish(state, "default", [hits[0], recent])
    channel, payload = asyncio.run(asyncio.wait_for(sub.get(), 1))
    assert channel == "alerts" and payload["kind"] == "anomaly"
    assert payload["bucket_start"] == recent["bucket_start"]  # old ones are not pushed
    assert sub.pending() == 0
