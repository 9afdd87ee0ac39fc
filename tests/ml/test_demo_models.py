"""The data ``make run`` loads trains every model, and every model beats its baseline on it.

Protocol (fixed before the first run, 2026-11-30; not tuned afterwards):

* Data: exactly ``make run``'s two commands, ``avila demo --if-empty --users 1000 --days 30``
  then ``avila demo --factory --days 7`` (default seed 42, default end = the current hour),
  into a fresh data directory; then a real server on it and ``POST /api/v1/ml/train``.
* The split and baselines are the training run's own (``avila.ml.training``): churn and
  conversion on the newest weekly/daily snapshot whose label window has closed, trained only
  on earlier snapshots, against a recency-only logistic regression; session conversion split
  by session start time against a funnel-stage (carts, checkouts) logistic regression;
  recommendations on items first carted/bought after the time split against popularity; CLV
  (BG/NBD) on a holdout period against each user's past purchase rate.
* Margins: ROC AUC ≥ baseline + 0.02 (churn, conversion, session conversion); P@10 and
  NDCG@10 ≥ popularity + 0.02; CLV holdout MAE ≤ 0.95 × the past-rate MAE; the planted
  flash-sale hour (15:00 UTC two days before the end) is listed by ``GET /api/v1/ml/anomalies``
  for ``events.all``.

The same margins must also hold, in process (no server), for two other fixed ends and seeds,
so the demo's structure does not depend on the calendar.

Churn and conversion against recency — protocol re-written (issue 12) before its first run,
2026-11-30 19:58 UTC, because the earlier check was a non-strict expected failure that could
not fail:

* Data: ``make run``'s two commands at their sizes (300 users, 30 days; factory 7 days) with
  seed 42 and a fixed reference end ``2026-11-30T12:00:00Z`` (:data:`REFERENCE_END`), so the
  data — and the training run — are the same on every run (the demo is deterministic for a
  fixed seed and end; :func:`test_demo_is_deterministic_for_a_fixed_seed_and_end`).
* Through the API: a real server on that data directory, ``POST /api/v1/ml/train`` (200).
  Also in process on the two other (seed, end) pairs above.
* Split and baseline: the training run's own (newest snapshot whose label window closed,
  trained on earlier snapshots; recency-only logistic regression).
* Margin: ROC AUC ≥ recency's + 0.02 for churn and for conversion, on every one of the three
  data sets. Deterministic, so the check is strict: a gap is recorded as a *strict* expected
  failure with its figures (it then fails the day the models meet the margin).

Second run of that protocol (decided 2026-11-30 22:30 UTC, written here before the run; the
margins, seeds, ends and baselines are unchanged):

* The demo generator plants stronger drivers beyond recency (``avila.demo.ecommerce``: wider
  personal visit rates, engagement that drives bounces and churn, half of the users whose
  payment fails quit, 80 % of abandoned carts come back to buy, habitual buyers vs window
  shoppers), and churn/conversion use ChurnModel's tree + log-linear blend (chosen on CDNOW
  development splits, ``tests/ml/dev_churn_cdnow.py``).
* Size: ``make run`` now loads 1,000 users × 30 days instead of 300. Reason, from development
  seeds only (101, 202, 303 with ends 2026-05-10, 2026-09-20, 2026-01-25; never 42, 7 or 11):
  with the test snapshot holding about 240 users at 300 users, the AUC gap to recency moved by
  ±0.02 from one generator tweak to the next (noise as large as the margin): the new
  generator gave churn +0.029/+0.023/+0.044, conversion +0.019/+0.044/+0.015 at 600 users,
  and churn +0.034/+0.026/+0.041, conversion +0.028/+0.033/+0.021 at 1,000 users. The demo
  command at 1,000 users takes 3.9–5.1 s here (300 users: 2.3 s), still a few seconds.
* Final generator (also chosen on development seeds only: visit-rate spread 1.2, 70 % quit
  after a failed payment, 90 % of abandoned carts return), 1,000 users, on development seeds
  101, 202, 303, 404, 505, 606 (ends 2026-05-10, 09-20, 01-25, 04-04, 08-08, 10-30): churn
  +0.045/+0.049/+0.049/+0.035/+0.046/+0.055, conversion +0.022/+0.040/+0.026/+0.026/+0.039/
  +0.038 over recency. Conversion's margin is the thin one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from avila.demo.ecommerce import generate_user_events
from avila.ml.training import train_project
from avila.storage import open_store
from avila.testing import ServerProcess
from tests.conftest import TEST_KEY

AUC_MARGIN = 0.02
#: ``make run``'s demo size (Makefile): 300 users until the second run of the churn/conversion
#: protocol, 1,000 since (the reason is in the module docstring, written before that run).
MAKE_RUN_USERS = "1000"
RANK_MARGIN = 0.02
CLV_RATIO = 0.95


def _demo(data_dir: Path, *extra: str) -> None:
    # PYTHONPATH passes on so the CLI runs this tree's code, not an installed copy.
    env = {
        "AVILA_DATA_DIR": str(data_dir),
        "PATH": "",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    for args in (
        ["--if-empty", "--users", MAKE_RUN_USERS, "--days", "30"],
        ["--factory", "--days", "7"],
    ):
        subprocess.run(
            [sys.executable, "-m", "avila.cli", "demo", *args, *extra],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )


def _assert_beats_baselines(models: dict[str, Any]) -> None:
    m = models["session_conversion"]["metrics"]
    assert m["roc_auc"] >= m["baseline"]["roc_auc"] + AUC_MARGIN, m
    recs = models["recommendations"]["metrics"]
    for metric in ("precision@10", "ndcg@10"):
        assert recs[metric] >= recs["baseline"][metric] + RANK_MARGIN, (metric, recs)
    clv = models["clv"]["metrics"]
    assert clv["holdout_mae"] <= CLV_RATIO * clv["baseline"]["holdout_mae"], clv


def _assert_snapshot_models_beat_recency(models: dict[str, Any]) -> None:
    for name in ("churn", "conversion"):
        m = models[name]["metrics"]
        assert m["roc_auc"] >= m["baseline"]["roc_auc"] + AUC_MARGIN, (name, m)


REFERENCE_END = "2026-11-30T12:00:00Z"


def _snapshot_model_margins(models: dict[str, Any]) -> dict[str, float]:
    """ROC AUC minus the recency baseline's, for churn and conversion."""
    return {
        name: models[name]["metrics"]["roc_auc"] - models[name]["metrics"]["baseline"]["roc_auc"]
        for name in ("churn", "conversion")
    }


@pytest.fixture(scope="module", params=[(7, "2026-03-01"), (11, "2026-07-15")])
def other_demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Training metrics on the demo for another seed and end (generated once per module)."""
    seed, end = request.param
    path = tmp_path_factory.mktemp(f"demo-{seed}")
    _demo(path, "--seed", str(seed), "--end", end)
    store = open_store(f"duckdb:///{path / 'avila.duckdb'}", read_only=True)
    try:
        _, meta = train_project(store, "default")
    finally:
        store.close()
    return meta["models"]


@pytest.fixture(scope="module")
def reference_demo_via_api(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Training metrics through the API on ``make run``'s data at the fixed reference end."""
    data_dir = tmp_path_factory.mktemp("demo-reference")
    _demo(data_dir, "--seed", "42", "--end", REFERENCE_END)
    server = ServerProcess(data_dir, env={"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0"})
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=300) as c:
            trained = c.post("/api/v1/ml/train", json={})
    finally:
        server.stop()
    assert trained.status_code == 200, trained.text
    models: dict[str, Any] = trained.json()["models"]
    return models


def test_demo_is_deterministic_for_a_fixed_seed_and_end() -> None:
    end = datetime.fromisoformat(REFERENCE_END)
    first = [e for user in generate_user_events(42, 40, 30, end) for e in user]
    again = [e for user in generate_user_events(42, 40, 30, end) for e in user]
    other = [e for user in generate_user_events(43, 40, 30, end) for e in user]
    assert first and first == again
    assert first != other


#: First run of this protocol (2026-11-30 19:29 UTC), ROC AUC ours vs recency + margin:
#: reference (seed 42, API) churn 0.829 vs 0.857 (−0.028), conversion 0.683 vs 0.719
#: (−0.036); seed 7 churn 0.902 (−0.030), conversion 0.732 (−0.049); seed 11 churn 0.865
#: (−0.023), conversion 0.740 (−0.007). The boosted snapshot models lost to recency on the
#: 300-user, 30-day demo (then a strict expected failure).
#: Second run (2026-11-30 22:39 UTC; generator, model and size as in the module docstring),
#: ROC AUC ours (margin over recency): reference (seed 42, API) churn 0.945 (+0.027),
#: conversion 0.901 (+0.040); seed 7 churn 0.935 (+0.045), conversion 0.855 (+0.029);
#: seed 11 churn 0.929 (+0.039), conversion 0.862 (+0.029). All six meet the +0.02 margin;
#: the expected-failure mark is gone. The demo data of these seeds had been looked at once
#: before (the first run), with the old generator.
def test_snapshot_models_beat_recency_on_the_reference_demo_through_the_api(
    reference_demo_via_api: dict[str, Any], other_demo: dict[str, Any]
) -> None:
    for label, models in (("reference, API", reference_demo_via_api), ("other", other_demo)):
        print(label, {k: round(v, 3) for k, v in _snapshot_model_margins(models).items()})
        print({n: round(models[n]["metrics"]["roc_auc"], 3) for n in ("churn", "conversion")})
    _assert_snapshot_models_beat_recency(reference_demo_via_api)
    _assert_snapshot_models_beat_recency(other_demo)


def _flash_hour(end: datetime) -> str:
    return (end - timedelta(days=2)).strftime("%Y-%m-%dT15:00:00Z")


def test_make_run_data_trains_every_model_and_each_beats_its_baseline(
    tmp_path: Path, make_server: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "run"
    data_dir.mkdir()
    _demo(data_dir)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    server = make_server(data_dir)
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=300) as c:
        # The demo's history is not live traffic (docs/analytics.md, "Real time").
        live = c.get("/api/v1/analytics/realtime").json()
        assert live["events_last_15_minutes"] == live["active_users_last_15_minutes"] == 0
        trained = c.post("/api/v1/ml/train", json={})
        assert trained.status_code == 200, trained.text
        _assert_beats_baselines(trained.json()["models"])
        found = c.get("/api/v1/ml/anomalies", params={"metric": "events.all", "limit": 200})
        assert found.status_code == 200, found.text
        starts = {a["bucket_start"] for a in found.json()["anomalies"]}
        # The demo's end is the hour the command ran; allow for an hour boundary in between.
        assert _flash_hour(end) in starts or _flash_hour(end - timedelta(hours=1)) in starts
        # The README's first curl sends an event dated 2025-11-26: one stray event a year
        # before the demo must not stretch training's snapshot grid (it made train 422).
        seed_event = {
            "event_id": "evt_123",
            "user_id": "user_001",
            "session_id": "sess_456",
            "timestamp": "2025-11-26T10:00:00Z",
            "event_type": {"type": "PageView", "data": {"url": "/products", "title": "Products"}},
        }
        assert c.post("/api/v1/events", json={"event": seed_event}).status_code == 202
        retrained = c.post("/api/v1/ml/train", json={})
        assert retrained.status_code == 200, retrained.text
        assert retrained.json()["training_window"]["start"].startswith("2025-11-26")
        _assert_beats_baselines(retrained.json()["models"])


def test_demo_structure_holds_for_other_seeds_and_dates(other_demo: dict[str, Any]) -> None:
    _assert_beats_baselines(other_demo)
