"""ML lifecycle against a real server process: baselines, training, predictions, reload."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY

PREDICTION_FIELDS = {
    "user_id",
    "churn_probability",
    "conversion_probability",
    "recommendations",
    "next_best_action",
    "model_versions",
}


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=120)


def test_train_predict_and_reload(
    demo_db: Path, tmp_path: Path, make_server: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "srv"
    data_dir.mkdir()
    shutil.copy(demo_db, data_dir / "avila.duckdb")
    server = make_server(data_dir)
    with _client(server) as c:
        # Before training: documented baselines, flagged.
        cold = c.get("/api/v1/users/user_00001/predictions")
        assert cold.status_code == 200, cold.text
        body = cold.json()
        assert set(body) >= PREDICTION_FIELDS and body["baseline"] is True
        assert 0 <= body["churn_probability"] <= 1 and body["recommendations"]
        assert body["next_best_action"]["action"] == "no_action"
        assert c.get("/api/v1/ml/models").json()["versions"] == []
        missing = c.get("/api/v1/users/nobody-at-all/predictions")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "user_not_found"
        bad = c.post("/api/v1/ml/train", json={"churn_horizon_days": "soon"})
        assert bad.status_code == 422

        # Training runs in a process of its own, started for the run and gone after it.
        before = set(server.query_worker_pids())
        seen: set[int] = set()
        training = threading.Event()

        def watch() -> None:
            # Every 20 ms until the training process shows up, then every 0.2 s: it lives
            # for the whole run either way, and the scans of /proc take less CPU from it.
            while not training.wait(0.2 if seen else 0.02):
                seen.update(set(server.query_worker_pids()) - before)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        trained = c.post("/api/v1/ml/train", json={})
        training.set()
        watcher.join()
        assert trained.status_code == 200, trained.text
        assert seen, "no training process was started"
        assert not seen & set(server.query_worker_pids()), "the training process stayed"
        run = trained.json()
        assert run["version"] == 1
        churn = run["models"]["churn"]["metrics"]
        assert churn["roc_auc"] > churn["baseline"]["roc_auc"]
        assert {"start", "end"} <= set(run["training_window"])

        warm = c.get("/api/v1/users/user_00001/predictions").json()
        assert set(warm) >= PREDICTION_FIELDS and warm["baseline"] is False
        assert warm["model_versions"]["churn"] == "v1"
        assert {"action", "reason"} <= set(warm["next_best_action"])
        assert all({"product_id", "score"} <= set(r) for r in warm["recommendations"])
        assert {"p_alive", "expected_purchases_30d", "clv_12m"} <= set(warm["clv"])

        models = c.get("/api/v1/ml/models").json()
        assert models["current_version"] == 1
        assert models["versions"][0]["models"]["churn"]["metrics"]["brier"] > 0
        product = warm["recommendations"][0]["product_id"]
        also = c.get(f"/api/v1/ml/products/{product}/also-bought", params={"limit": 3})
        assert also.status_code == 200 and len(also.json()["also_bought"]) <= 3
        assert c.get("/api/v1/ml/products/nope/also-bought").status_code == 404
        listed = c.get("/api/v1/ml/anomalies", params={"detector": "seasonal", "limit": 5})
        assert listed.status_code == 200
        assert all(a["detector"] == "seasonal" for a in listed.json()["anomalies"])
        assert c.get("/api/v1/ml/anomalies", params={"limit": 0}).status_code == 422

        # A live session: counted from ingestion, scored by the session model.
        now = datetime.now(UTC)
        events = [
            {
                "user_id": "live-user",
                "session_id": "live-1",
                "timestamp": (now - timedelta(seconds=30 - i)).isoformat(),
                "event_type": {"type": kind, "data": data},
            }
            for i, (kind, data) in enumerate(
                [
                    ("PageView", {"url": "/products", "title": "p"}),
                    ("ProductView", {"product_id": "prod_001", "price": 299.0}),
                    ("AddToCart", {"product_id": "prod_001", "quantity": 1, "price": 299.0}),
                ]
            )
        ]
        assert c.post("/api/v1/events/batch", json={"events": events}).status_code == 202
        live = c.get("/api/v1/users/live-user/predictions").json()
        assert live["baseline"] is True and live["session"]["events"] == 3
        assert 0 < live["session"]["conversion_probability"] < 1
    server.stop()

    again = make_server(data_dir)
    with _client(again) as c:
        assert c.get("/api/v1/ml/models").json()["current_version"] == 1
        reloaded = c.get("/api/v1/users/user_00001/predictions").json()
        assert reloaded["churn_probability"] == warm["churn_probability"]


@pytest.mark.parametrize("path", ["/api/v1/ml/models", "/api/v1/users/u/predictions"])
def test_ml_routes_need_a_key(server: ServerProcess, path: str) -> None:
    assert httpx.get(server.url + path).status_code == 401


def test_training_an_empty_project_is_refused(empty_ml_server: ServerProcess) -> None:
    with _client(empty_ml_server) as client:
        response = client.post("/api/v1/ml/train")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "insufficient_training_data"
    assert "users" in {d["path"] for d in error["details"]}
