"""When ``/users/{id}/predictions`` answers ``churn_probability: null``, and why it says so.

After training, every scored user has numbers (and a user first seen after the run gets the
run's base rates). Before a run exists — and on a small store ``POST /ml/train`` is refused
(422 ``insufficient_training_data``: < 50 users, < 13 days, …) — the answer is the store's base
rates. The churn base rate is the share of users active in [E − 28 d, E − 14 d) with no event
since (E = newest event): on a store with less than 14 days of events nobody is in that
window, the rate is undefined, and ``churn_probability`` is ``null``. The contract keeps the
field's type (number or null); the answer now says why in ``unavailable``.

Oracle: the base rates recomputed in plain Python from the events read out of the real DuckDB
file the demo wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY


def _demo(data_dir: Path, users: int, days: int) -> None:
    env = {**os.environ, "AVILA_DATA_DIR": str(data_dir)}
    env.pop("AVILA_STORAGE_URL", None)
    args = ["--users", str(users), "--days", str(days), "--end", "2026-11-30"]
    cmd = [sys.executable, "-m", "avila.cli", "demo", *args]
    done = subprocess.run(cmd, env=env, cwd=data_dir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _oracle(db: Path) -> tuple[float | None, float | None, str]:
    """(churn base rate, conversion base rate, a user id) from the stored events."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT user_id, ts, event_type FROM events WHERE project_id = 'default'"
        ).fetchall()
    finally:
        con.close()
    e: datetime = max(ts for _, ts, _ in rows)
    by_user: dict[str, list[tuple[datetime, str]]] = {}
    for user, ts, kind in rows:
        if ts >= e - timedelta(days=35):
            by_user.setdefault(user, []).append((ts, kind))
    mid = [
        u
        for u, evs in by_user.items()
        if any(e - timedelta(days=28) <= ts < e - timedelta(days=14) for ts, _ in evs)
    ]
    churned = [u for u in mid if not any(ts >= e - timedelta(days=14) for ts, _ in by_user[u])]
    earlier = [u for u, evs in by_user.items() if any(ts < e - timedelta(days=7) for ts, _ in evs)]
    bought = [
        u
        for u in earlier
        if any(k == "purchase" and ts >= e - timedelta(days=7) for ts, k in by_user[u])
    ]
    churn = len(churned) / len(mid) if mid else None
    conversion = len(bought) / len(earlier) if earlier else None
    return churn, conversion, sorted(by_user)[0]


@pytest.mark.parametrize(("days", "churn_null"), [(10, True), (30, False)])
def test_small_store_predictions_say_why_a_number_is_missing(
    tmp_path: Path, make_server: Callable[..., ServerProcess], days: int, churn_null: bool
) -> None:
    _demo(tmp_path, users=30, days=days)
    churn, conversion, user = _oracle(tmp_path / "avila.duckdb")
    assert (churn is None) is churn_null and conversion is not None
    server = make_server(tmp_path)
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=120) as c:
        refused = c.post("/api/v1/ml/train")
        assert refused.status_code == 422  # too few users: no model, the baseline answers
        assert refused.json()["error"]["code"] == "insufficient_training_data"
        body = c.get(f"/api/v1/users/{user}/predictions").json()
    assert body["baseline"] is True
    assert body["conversion_probability"] == pytest.approx(conversion, abs=1e-6)
    unavailable = body["unavailable"]
    if churn_null:
        assert body["churn_probability"] is None
        why = unavailable["churn_probability"]
        assert why["code"] == "churn_base_rate_undefined"
        assert "14" in why["message"] and "28" in why["message"]
        assert "POST /api/v1/ml/train" in why["message"]
    else:
        assert body["churn_probability"] == pytest.approx(churn, abs=1e-6)
        assert "churn_probability" not in unavailable
    assert set(unavailable) == ({"churn_probability"} if churn_null else set()) | {"clv"}
    assert unavailable["clv"]["code"] == "no_model_trained"
    assert "conversion_probability" not in unavailable
