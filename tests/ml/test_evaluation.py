"""Metrics against scikit-learn and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from avila.errors import ValidationFailed
from avila.ml.evaluation import (
    average_precision,
    brier_score,
    classification_report,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    roc_auc,
)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_scoring_metrics_match_sklearn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.2
    scores = rng.random(300) + 0.3 * y
    if ties:
        scores = np.round(scores, 1)
    assert roc_auc(y, scores) == pytest.approx(metrics.roc_auc_score(y, scores))
    assert average_precision(y, scores) == pytest.approx(metrics.average_precision_score(y, scores))
    probs = np.clip(scores, 0, 1)
    assert brier_score(y, probs) == pytest.approx(metrics.brier_score_loss(y, probs))


def test_classification_report_names_the_base_rate() -> None:
    y = np.array([0, 0, 0, 1])
    report = classification_report(y, [0.1, 0.2, 0.3, 0.9])
    assert report["base_rate"] == 0.25
    assert report["brier_base_rate"] == pytest.approx(0.25 * 0.75)
    assert report["roc_auc"] == 1.0 and report["pr_auc"] == 1.0


def test_ranking_metrics_by_hand() -> None:
    recommended = [["a", "b", "c"], ["x", "y", "z"], ["p"]]
    relevant = [{"b", "d"}, {"q"}, set()]  # the third user has nothing held out: skipped
    assert precision_at_k(recommended, relevant, 3) == pytest.approx((1 / 3 + 0) / 2)
    assert recall_at_k(recommended, relevant, 3) == pytest.approx((1 / 2 + 0) / 2)
    dcg = 1 / np.log2(3)
    idcg = 1 + 1 / np.log2(3)
    assert ndcg_at_k(recommended, relevant, 3) == pytest.approx((dcg / idcg + 0) / 2)


def test_ndcg_matches_sklearn_for_binary_relevance() -> None:
    rng = np.random.default_rng(0)
    items = np.arange(30)
    recommended, relevant, sk = [], [], []
    for _ in range(20):
        scores = rng.random(30)
        rel = set(rng.choice(items, 5, replace=False).tolist())
        top = list(np.argsort(-scores)[:10])
        recommended.append(top)
        relevant.append(rel)
        truth = np.isin(items, list(rel)).astype(float)
        sk.append(metrics.ndcg_score([truth], [scores], k=10))
    assert ndcg_at_k(recommended, relevant, 10) == pytest.approx(np.mean(sk))


@pytest.mark.parametrize(
    ("y", "s"),
    [([1, 1, 1], [0.1, 0.2, 0.3]), ([0, 2, 1], [0.1, 0.2, 0.3]), ([0, 1], [0.1])],
)
def test_scoring_metrics_reject_degenerate_labels(y, s) -> None:
    with pytest.raises(ValidationFailed) as info:
        roc_auc(y, s)
    assert info.value.code == "evaluation_invalid_labels"
