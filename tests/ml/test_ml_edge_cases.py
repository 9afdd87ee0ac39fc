"""Edge cases of the ML endpoints as users reach them: erasure, bad options, base rates."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from avila.errors import NotFound
from avila.ml.predictions import PredictionService
from avila.ml.recommend import PopularityRecommender
from avila.ml.registry import ModelRegistry
from avila.ml.training import TrainedModels
from avila.storage import open_store
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.ml.conftest import ingest_events

END = "2025-03-01T00:00:00+00:00"
UNICODE_USER = "usér-東京-😀"


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=180)


@pytest.fixture(scope="module")
def small_demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 demo users over 30 days (enough to train), user_00001 renamed to a unicode id."""
    from avila.demo.ecommerce import generate_user_events

    events = []
    for user in generate_user_events(7, 300, 30, datetime.fromisoformat(END)):
        for raw in user:
            event = json.loads(raw)
            if event["user_id"] == "user_00001":
                event["user_id"] = UNICODE_USER
            events.append(json.dumps(event).encode())
    path = tmp_path_factory.mktemp("ml-edge") / "avila.duckdb"
    store = open_store(f"duckdb:///{path}")
    try:
        ingest_events(store, events)
    finally:
        store.close()
    return path


def _server_with_demo(
    small_demo_db: Path, tmp_path: Path, make_server: Callable[..., ServerProcess]
) -> tuple[Path, ServerProcess]:
    data_dir = tmp_path / "srv"
    data_dir.mkdir()
    shutil.copy(small_demo_db, data_dir / "avila.duckdb")
    return data_dir, make_server(data_dir)


def test_erased_user_stays_erased_after_a_restart(
    small_demo_db: Path, tmp_path: Path, make_server: Callable[..., ServerProcess]
) -> None:
    """GDPR: after DELETE /api/v1/users/{id} the precomputed scores must not come back when
    the server restarts and reloads the run from the registry."""
    data_dir, server = _server_with_demo(small_demo_db, tmp_path, make_server)
    user = "user_00002"
    with _client(server) as c:
        assert c.post("/api/v1/ml/train", json={}).status_code == 200
        before = c.get(f"/api/v1/users/{user}/predictions")
        assert before.status_code == 200 and before.json()["baseline"] is False
        assert c.delete(f"/api/v1/users/{user}").status_code == 200
        gone = c.get(f"/api/v1/users/{user}/predictions")
        assert gone.status_code == 404, gone.text
    server.stop()

    again = make_server(data_dir)
    with _client(again) as c:
        assert c.get("/api/v1/ml/models").json()["current_version"] == 1
        still_gone = c.get(f"/api/v1/users/{user}/predictions")
        assert still_gone.status_code == 404, still_gone.text
        assert still_gone.json()["error"]["code"] == "user_not_found"
        # Other users keep their precomputed scores, the unicode id included.
        other = c.get(f"/api/v1/users/{UNICODE_USER}/predictions")
        assert other.status_code == 200, other.text
        assert other.json()["baseline"] is False and other.json()["user_id"] == UNICODE_USER


@pytest.mark.parametrize("value", [0, -3])
def test_training_horizon_below_one_day_is_a_validation_error(
    value: int, empty_ml_server: ServerProcess
) -> None:
    """A horizon of zero or fewer days is an invalid option (field path), not missing data."""
    with _client(empty_ml_server) as c:
        response = c.post("/api/v1/ml/train", json={"churn_horizon_days": value})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] != "insufficient_training_data", error
    assert [d["path"] for d in error["details"]] == ["churn_horizon_days"]


def _event(n: int, user: str, ts: datetime, kind: str) -> bytes:
    data: dict[str, Any]
    if kind == "purchase":
        item = {"product_id": "p1", "quantity": 1, "price": 10.0}
        data = {"order_id": f"o{n}", "revenue": 10.0, "currency": "EUR", "items": [item]}
        event_type = {"type": "Purchase", "data": data}
    else:
        event_type = {"type": "PageView", "data": {"url": "/", "title": "home"}}
    return json.dumps(
        {
            "event_id": f"cold-{n}",
            "user_id": user,
            "session_id": f"s-{n}",
            "timestamp": ts.isoformat().replace("+00:00", "Z"),
            "event_type": event_type,
        }
    ).encode()


def _documented_base_rates(events: list[tuple[str, datetime, str]]) -> tuple[float, float]:
    """docs/ml.md, "Baselines", on exact times: churn = share of the users active in
    [E−28 d, E−14 d) with no event in the last 14 days; conversion = share of the users seen
    before E−7 d who purchased in the last 7 days (within the 35 days the query reads)."""
    end = max(ts for _, ts, _ in events)
    day = timedelta(days=1)
    users = {u for u, _, _ in events}

    def any_event(user: str, lo: datetime, hi: datetime, kind: str | None = None) -> bool:
        return any(
            u == user and lo <= ts < hi and (kind is None or k == kind) for u, ts, k in events
        )

    mid = [u for u in users if any_event(u, end - 28 * day, end - 14 * day)]
    churned = [u for u in mid if not any_event(u, end - 14 * day, end + day)]
    seen = [u for u in users if any_event(u, end - 35 * day, end - 7 * day)]
    bought = [u for u in seen if any_event(u, end - 7 * day, end + day, "purchase")]
    return len(churned) / len(mid), len(bought) / len(seen)


def test_cold_base_rates_follow_the_documented_windows(tmp_path: Path) -> None:
    """Before any training the base rates use the documented windows, measured from the
    newest event E — also for events on the calendar day of a window's boundary (E at noon:
    an event at 14:00 fourteen days earlier is within the last 14 days)."""
    e = datetime.fromisoformat("2025-03-01T12:00:00+00:00")
    day = timedelta(days=1)
    plan = [
        ("anchor", e, "view"),
        ("stayer", e - 20 * day, "view"),
        ("stayer", e - 14 * day + timedelta(hours=2), "view"),
        ("leaver", e - 20 * day, "view"),
        ("buyer", e - 20 * day, "view"),
        ("buyer", e - 7 * day + timedelta(hours=2), "purchase"),
        ("newbie", e - 7 * day + timedelta(hours=2), "purchase"),
    ]
    store = open_store(f"duckdb:///{tmp_path / 'cold.duckdb'}")
    try:
        ingest_events(store, [_event(n, u, ts, k) for n, (u, ts, k) in enumerate(plan)])
        service = PredictionService(store, ModelRegistry(tmp_path / "models"))
        body = service.predict("default", "stayer")
    finally:
        store.close()
    churn, conversion = _documented_base_rates(plan)
    assert (churn, conversion) == (pytest.approx(1 / 3), pytest.approx(1 / 3))  # by hand
    assert body["baseline"] is True
    assert body["churn_probability"] == pytest.approx(churn, abs=1e-6)
    assert body["conversion_probability"] == pytest.approx(conversion, abs=1e-6)


def test_user_erased_while_a_run_trains_is_not_served_by_that_run(tmp_path: Path) -> None:
    """A run whose training read the store before an erasure is installed after it: the
    erased user's scores in it must not be served (DELETE /api/v1/users/{id} calls forget)."""
    record = {"churn_probability": 0.9, "conversion_probability": 0.1, "recommendations": []}
    store = open_store(f"duckdb:///{tmp_path / 'erase.duckdb'}")
    try:
        service = PredictionService(store, ModelRegistry(tmp_path / "models"))
        service.forget("default", "gone")  # erased (no stored event) while training ran
        run = TrainedModels(
            project_id="default", version=1, trained_at="2025-03-01T00:00:00Z",
            as_of="2025-03-01T00:00:00Z", users={"gone": dict(record)}, popularity=[],
            also_bought={}, base_rates={"churn": 0.5, "conversion": 0.1}, session_model=None,
        )  # fmt: skip
        service.install("default", {"version": 1}, run)
        with pytest.raises(NotFound) as raised:
            service.predict("default", "gone")
    finally:
        store.close()
    assert raised.value.code == "user_not_found"


def test_recommendation_ties_at_the_cut_go_to_the_lowest_item_id() -> None:
    """Items tied with the n-th score: the list is deterministic by item id (the documented
    tie rule of ``_top_n``), not whichever tied items a partial sort happened to pick."""
    popularity = [2, 2, 0, 0, 2, 2, 0, 0, 2, 1, 0, 2, 0, 1, 1, 1, 0, 0, 2]
    rows = []
    for i, count in enumerate(popularity):
        item = f"p{i:02d}"
        rows.append({"user_id": "nobody-special", "item_id": item, "event": "impression"})
        rows += [{"user_id": f"u{j}", "item_id": item, "event": "view"} for j in range(count)]
    model = PopularityRecommender(event_weights={"view": 1.0, "impression": 0.0}).fit(
        pd.DataFrame(rows)
    )
    expected = sorted(
        ((f"p{i:02d}", float(c)) for i, c in enumerate(popularity)), key=lambda p: (-p[1], p[0])
    )
    for n in (1, 7, 10, 13, 19, 50):
        assert model.recommend("cold-user", n=n) == expected[:n], n
