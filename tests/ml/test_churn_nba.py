"""Churn on a generated event log with a planted pre-churn slowdown; next-best-action rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avila.errors import ValidationFailed
from avila.ml.churn import ChurnModel, churn_snapshot, evaluate_time_split
from avila.ml.evaluation import roc_auc
from avila.ml.nba import Action, NextBestAction

START = pd.Timestamp("2024-01-01", tz="UTC")
HORIZON = 30.0
FEATURES = [
    "recency_days",
    "tenure_days",
    "events_total",
    "events_30d",
    "events_90d",
    "active_days_30d",
]


def _event_log(n_users: int, seed: int) -> pd.DataFrame:
    """Users join in days 0–200, act as Poisson processes, quit after Exp(250 d); in the 60
    days before quitting they slow to 30 % of their rate (the signal recency alone misses)."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        join = rng.uniform(0, 200)
        rate = rng.gamma(2.0, 0.1)
        quit_day = join + rng.exponential(250)
        slow_from = max(join, quit_day - 60)
        for lo, hi, r in ((join, slow_from, rate), (slow_from, quit_day, 0.3 * rate)):
            n = rng.poisson(r * max(hi - lo, 0))
            rows.extend((user, day) for day in rng.uniform(lo, hi, n))
    log = pd.DataFrame(rows, columns=["user_id", "day"])
    log["timestamp"] = START + pd.to_timedelta(log["day"], unit="D")
    return log.drop(columns="day")


@pytest.fixture(scope="module")
def snapshots() -> pd.DataFrame:
    log = _event_log(3000, seed=11)
    days = [210, 240, 270, 300, 330]
    return pd.concat(
        [
            churn_snapshot(
                log, START + pd.Timedelta(days=d), horizon_days=HORIZON, active_within_days=60
            )
            for d in days
        ]
    )


@pytest.mark.parametrize("method", ["blend", "hist_gb", "log_linear", "logistic"])
def test_churn_model_beats_recency_on_a_time_split(snapshots: pd.DataFrame, method: str) -> None:
    test_time = START + pd.Timedelta(days=330)
    report = evaluate_time_split(
        ChurnModel(method=method),
        snapshots,
        test_snapshot=test_time,
        horizon_days=HORIZON,
        feature_cols=FEATURES,
    )
    test = snapshots[snapshots["snapshot"] == test_time]
    recency_auc = roc_auc(test["churned"], test["recency_days"])
    assert report["roc_auc"] > recency_auc
    assert report["pr_auc"] > report["base_rate"]
    assert report["brier"] < report["brier_base_rate"]
    assert report["n_train"] == (snapshots["snapshot"] <= START + pd.Timedelta(days=300)).sum()


def test_snapshot_uses_only_the_past_and_labels_the_future() -> None:
    log = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "c"],
            "timestamp": ["2024-01-01", "2024-01-25", "2024-02-10", "2024-01-30", "2024-02-20"],
        }
    )
    snap = churn_snapshot(log, "2024-01-31", horizon_days=14)
    assert list(snap.index) == ["a", "b"]  # c has not appeared yet
    assert snap.loc["a", "recency_days"] == 6 and snap.loc["a", "events_total"] == 2
    assert snap.loc["a", "churned"] == 0 and snap.loc["b", "churned"] == 1


def test_time_split_without_training_rows_is_refused(snapshots: pd.DataFrame) -> None:
    with pytest.raises(ValidationFailed) as info:
        evaluate_time_split(
            ChurnModel(),
            snapshots,
            test_snapshot=START + pd.Timedelta(days=210),
            horizon_days=HORIZON,
            feature_cols=FEATURES,
        )
    assert info.value.code == "churn_too_little_data"


def test_churn_model_rejects_single_class_and_text_features() -> None:
    frame = pd.DataFrame({"x": np.arange(100.0)})
    with pytest.raises(ValidationFailed) as info:
        ChurnModel().fit(frame, np.zeros(100))
    assert info.value.code == "churn_too_little_data"
    with pytest.raises(ValidationFailed) as info:
        ChurnModel().fit(frame.assign(plan=["pro"] * 100), np.arange(100) % 2)
    assert info.value.code == "churn_invalid_features"


@pytest.mark.parametrize("method", ["blend", "hist_gb", "log_linear", "logistic"])
def test_a_feature_empty_in_every_training_row_is_left_out(method: str) -> None:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {"recency": rng.exponential(10, 300), "visits": rng.integers(1, 40, 300).astype(float)}
    )
    churned = (frame["recency"] + rng.normal(0, 4, 300) > 10).astype(int)
    with_empty = frame.assign(value_total=np.nan)  # e.g. a shop with no purchase yet
    model = ChurnModel(method=method, random_state=3).fit(with_empty, churned)
    reference = ChurnModel(method=method, random_state=3).fit(frame, churned)
    assert model.features_ == ["recency", "visits"]
    np.testing.assert_allclose(
        model.predict_proba(with_empty), reference.predict_proba(frame), rtol=1e-12
    )
    np.testing.assert_allclose(model.predict_proba(frame), reference.predict_proba(frame))
    with pytest.raises(ValidationFailed) as info:
        ChurnModel(method=method).fit(frame * np.nan, churned)
    assert info.value.code == "churn_invalid_features"
    assert {d["path"] for d in info.value.details} == {"recency", "visits"}


CUSTOMERS = pd.DataFrame(
    {"churn_risk": [0.9, 0.9, 0.1], "ltv": [1000, 40, 1000], "country": ["DE", "DE", "FR"]},
    index=["c1", "c2", "c3"],
)
ACTIONS = [
    Action(
        "retention_call", value=300, cost=25, rules=[("churn_risk", ">=", 0.5), ("ltv", ">=", 500)]
    ),
    Action("discount", value=60, cost=10, rules=[("country", "in", ["DE", "AT"])]),
    Action("newsletter", value=10, cost=0.5),
]
PROPENSITY = pd.DataFrame(
    {"retention_call": [0.2, 0.2, 0.2], "discount": [0.3, 0.1, 0.9], "newsletter": [0.1, 0.1, 0.1]},
    index=CUSTOMERS.index,
)


def test_next_best_action_maximises_expected_net_among_eligible() -> None:
    out = NextBestAction(ACTIONS).decide(CUSTOMERS, PROPENSITY)
    eligible = {
        "c1": ["retention_call", "discount", "newsletter"],
        "c2": ["discount", "newsletter"],
        "c3": ["newsletter"],
    }
    by_value = {a.name: a for a in ACTIONS}
    for customer, names in eligible.items():
        nets = {
            n: PROPENSITY.loc[customer, n] * by_value[n].value - by_value[n].cost for n in names
        }
        best = max(nets, key=nets.__getitem__)
        assert out.loc[customer, "action"] == best
        assert out.loc[customer, "expected_net"] == pytest.approx(nets[best])
    assert out.loc["c1", "action"] == "retention_call"  # 0.2·300−25 = 35 > 0.3·60−10 = 8
    assert out.loc["c1", "expected_net"] == pytest.approx(35.0)
    assert out.loc["c2", "action"] == "newsletter"  # call ineligible (ltv), discount −4
    assert out.loc["c3", "action"] == "newsletter"  # call (risk) and discount (FR) ineligible
    assert "retention_call ineligible (ltv >= 500 fails)" in out.loc["c2", "reason"]
    assert "discount: 0.100 × 60 − 10 = -4.00" in out.loc["c2", "reason"]


def test_next_best_action_prefers_nothing_over_losses() -> None:
    out = NextBestAction([Action("call", value=10, cost=50)]).decide(
        CUSTOMERS, pd.DataFrame({"call": [1.0, 1.0, 1.0]}, index=CUSTOMERS.index)
    )
    assert set(out["action"]) == {"no_action"} and (out["expected_net"] == 0).all()


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: NextBestAction([Action("a", 1, rules=[("x", "~=", 1)])]), "nba_invalid_actions"),
        (lambda: NextBestAction([Action("a", 1), Action("a", 2)]), "nba_invalid_actions"),
        (
            lambda: NextBestAction([Action("a", 1, rules=[("nope", ">", 1)])]).decide(
                CUSTOMERS, pd.DataFrame({"a": [0.1] * 3}, index=CUSTOMERS.index)
            ),
            "nba_unknown_column",
        ),
        (
            lambda: NextBestAction([Action("a", 1)]).decide(
                CUSTOMERS, pd.DataFrame({"a": [1.5] * 3}, index=CUSTOMERS.index)
            ),
            "nba_invalid_propensity",
        ),
        (
            lambda: NextBestAction([Action("b", 1)]).decide(CUSTOMERS, PROPENSITY),
            "nba_invalid_propensity",
        ),
    ],
)
def test_next_best_action_validation(make, code) -> None:
    with pytest.raises(ValidationFailed) as info:
        make()
    assert info.value.code == code
