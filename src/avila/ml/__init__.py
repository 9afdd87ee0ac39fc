"""Models over numpy/pandas inputs: CLV, recommendations, anomaly detection, churn, next best action.

No storage and no HTTP here: callers pass frames/arrays and get arrays/frames back. Every
estimator follows scikit-learn conventions (hyperparameters in ``__init__``, ``fit`` returns
``self``, fitted attributes end in ``_``) and raises :class:`avila.errors.ValidationFailed`
with a stable ``code`` for unusable input.

Submodules are imported on first use, so ``import avila.ml`` stays cheap and a deployment
without river (streaming anomalies) can still use the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BetaGeoModel": "clv",
    "GammaGammaModel": "clv",
    "customer_lifetime_value": "clv",
    "summarise_transactions": "clv",
    "PopularityRecommender": "recommend",
    "ItemKNNRecommender": "recommend",
    "EASERecommender": "recommend",
    "StreamingAnomalyDetector": "anomaly",
    "SeasonalAnomalyDetector": "anomaly",
    "ChurnModel": "churn",
    "churn_snapshot": "churn",
    "evaluate_time_split": "churn",
    "Action": "nba",
    "NextBestAction": "nba",
    "evaluate_recommender": "evaluation",
    "per_user_holdout": "evaluation",
    "classification_report": "evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'avila.ml' has no attribute {name!r}")
    return getattr(importlib.import_module(f"avila.ml.{module}"), name)


def __dir__() -> list[str]:
    return __all__
