"""Evaluation protocols and metrics used beside the models, in plain numpy/pandas.

Ranking metrics follow the usual top-N definitions with binary relevance:

* precision@k = |top-k ∩ relevant| / k (users without held-out items are skipped);
* recall@k = |top-k ∩ relevant| / |relevant|;
* NDCG@k = DCG@k / IDCG@k with gain 1/log2(rank + 1) (Järvelin & Kekäläinen 2002).

Scoring metrics:

* ROC AUC via the Mann-Whitney rank statistic (ties count one half);
* PR AUC as average precision (the step-wise area, as scikit-learn computes it), reported
  next to the base rate it must beat;
* Brier score = mean squared error of the predicted probabilities (Brier 1950).

Example:

>>> precision_at_k([["a", "b"]], [{"b", "c"}], k=2)
0.5
>>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from avila.errors import ValidationFailed
from avila.ml._checks import as_float_array, same_length

if TYPE_CHECKING:
    import pandas as pd  # loaded by the first fit or read: the app starts without it

__all__ = [
    "average_precision",
    "brier_score",
    "classification_report",
    "evaluate_recommender",
    "ndcg_at_k",
    "per_user_holdout",
    "precision_at_k",
    "recall_at_k",
    "roc_auc",
]


def _pairs(
    recommended: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]]
) -> list[tuple[Sequence[Hashable], Collection[Hashable]]]:
    if len(recommended) != len(relevant):
        raise ValidationFailed(
            "recommended and relevant must list the same users",
            code="evaluation_length_mismatch",
            details=[{"path": "relevant", "message": f"{len(recommended)} vs {len(relevant)}"}],
        )
    return [(rec, rel) for rec, rel in zip(recommended, relevant, strict=True) if len(rel) > 0]


def _hits(rec: Sequence[Hashable], rel: Collection[Hashable], k: int) -> int:
    return sum(1 for item in list(rec)[:k] if item in rel)


def precision_at_k(
    recommended: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int
) -> float:
    """Mean over users with relevant items of hits in the top ``k`` divided by ``k``."""
    pairs = _pairs(recommended, relevant)
    return float(np.mean([_hits(rec, rel, k) / k for rec, rel in pairs])) if pairs else 0.0


def recall_at_k(
    recommended: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int
) -> float:
    """Mean over users with relevant items of hits in the top ``k`` divided by |relevant|."""
    pairs = _pairs(recommended, relevant)
    return float(np.mean([_hits(rec, rel, k) / len(rel) for rec, rel in pairs])) if pairs else 0.0


def ndcg_at_k(
    recommended: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int
) -> float:
    """Mean binary-relevance NDCG@k over users with relevant items."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for rec, rel in _pairs(recommended, relevant):
        gains = np.array([item in rel for item in list(rec)[:k]], dtype=float)
        dcg = float(gains @ discounts[: len(gains)])
        idcg = float(discounts[: min(k, len(rel))].sum())
        values.append(dcg / idcg)
    return float(np.mean(values)) if values else 0.0


def per_user_holdout(
    interactions: pd.DataFrame,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    user_col: str = "user_id",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each user's rows at random: ``floor(n_u · test_fraction)`` rows go to test.

    Deterministic for a given ``seed``; users with too few rows keep everything in train.
    """
    import pandas as pd

    if not 0 < test_fraction < 1:
        raise ValidationFailed(
            "test_fraction must be in (0, 1)",
            code="evaluation_invalid_fraction",
            details=[{"path": "test_fraction", "message": str(test_fraction)}],
        )
    rng = np.random.default_rng(seed)
    codes = pd.factorize(interactions[user_col], sort=True)[0]
    order = np.lexsort((rng.random(len(interactions)), codes))
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    counts = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    n_test = np.floor(counts * test_fraction).astype(int)
    is_test = np.zeros(len(interactions), dtype=bool)
    is_test[order] = rank < np.repeat(n_test, counts)
    return interactions[~is_test], interactions[is_test]


def evaluate_recommender(
    model: Any,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    k: int = 10,
    user_col: str = "user_id",
    item_col: str = "item_id",
    event_col: str | None = "event",
) -> dict[str, float]:
    """Fit ``model`` on ``train`` and score its top-``k`` lists against ``test``.

    ``model`` is any :class:`avila.ml.recommend.Recommender`; its exclusion rule removes
    training items from the lists. Returns precision, recall and NDCG at ``k`` and the
    number of evaluated users.
    """
    model.fit(train, user_col=user_col, item_col=item_col, event_col=event_col)
    relevant = test.groupby(user_col)[item_col].agg(set)
    users = list(relevant.index)
    recommended = model.recommend_many(users, n=k)
    rel = list(relevant)
    return {
        f"precision@{k}": precision_at_k(recommended, rel, k),
        f"recall@{k}": recall_at_k(recommended, rel, k),
        f"ndcg@{k}": ndcg_at_k(recommended, rel, k),
        "users": float(len(users)),
    }


def _binary(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    code = "evaluation_invalid_labels"
    y = as_float_array(y_true, "y_true", code=code)
    s = as_float_array(scores, "scores", code=code)
    same_length([y, s], ["y_true", "scores"], code=code)
    if not np.all((y == 0) | (y == 1)) or y.min() == y.max():
        raise ValidationFailed(
            "y_true must be 0/1 and contain both classes",
            code=code,
            details=[{"path": "y_true", "message": f"classes {sorted(set(y.tolist()))[:5]}"}],
        )
    return y, s


def roc_auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties ½."""
    y, s = _binary(y_true, scores)
    from scipy import stats

    ranks = stats.rankdata(s)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true: Any, scores: Any) -> float:
    """PR AUC as average precision: Σ (R_n − R_{n−1}) P_n over distinct score thresholds."""
    y, s = _binary(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    # Evaluate only at the last position of each run of tied scores.
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier_score(y_true: Any, probabilities: Any) -> float:
    """Mean squared difference between 0/1 outcomes and predicted probabilities."""
    y, p = _binary(y_true, probabilities)
    return float(np.mean((p - y) ** 2))


def classification_report(y_true: Any, probabilities: Any) -> dict[str, float]:
    """ROC AUC, PR AUC with its base rate, Brier score (and the no-skill Brier) in one dict."""
    y, p = _binary(y_true, probabilities)
    base = float(y.mean())
    return {
        "roc_auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "base_rate": base,
        "brier": brier_score(y, p),
        "brier_base_rate": base * (1 - base),
        "n": float(len(y)),
    }
