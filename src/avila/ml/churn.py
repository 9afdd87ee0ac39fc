"""Supervised churn: point-in-time snapshots, a calibrated classifier, time-split evaluation.

Snapshots follow the leakage-free protocol in REFERENCES (supervised churn/conversion):
features use only events at or before the snapshot time t₀, the label is "no activity in
(t₀, t₀ + H]", and evaluation trains on earlier snapshots whose label window closed before the
test snapshot — random splits leak the future. Reported: ROC AUC, PR AUC next to the base rate,
Brier score next to the base rate's Brier (Brier 1950; Niculescu-Mizil & Caruana 2005 on
calibration, Platt scaling / isotonic via scikit-learn ``CalibratedClassifierCV``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd  # loaded by the first fit or read: the app starts without it
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline

from avila.errors import ValidationFailed
from avila.ml._checks import require_fitted
from avila.ml.clv import BetaGeoModel
from avila.ml.evaluation import classification_report

__all__ = [
    "ACTIVITY_HISTORY",
    "ChurnModel",
    "activity_history",
    "churn_snapshot",
    "evaluate_time_split",
    "log_linear_classifier",
]


_METHODS = ("blend", "hist_gb", "log_linear", "logistic")


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.sign(x) * np.log1p(np.abs(x)), dtype=float)


#: Snapshot columns (:func:`avila.ml.features.user_snapshot`) a BG/NBD activity history is
#: read from when :class:`ChurnModel` is given its label horizon.
ACTIVITY_HISTORY = ("active_days_total", "tenure_days", "recency_days")


def activity_history(features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD's (x, t_x, T) in days from snapshot columns, with active days as "purchases".

    x = active days − 1 (repeat days, same-day activity counts once as in FHL 2005),
    t_x = first to last activity (``tenure_days − recency_days``; 0 when x = 0),
    T = first activity to t₀ (``tenure_days``).
    """
    x = features["active_days_total"].to_numpy(dtype=float) - 1.0
    big_t = features["tenure_days"].to_numpy(dtype=float)
    span = np.clip(big_t - features["recency_days"].to_numpy(dtype=float), 0.0, big_t)
    return x, np.where(x > 0, span, 0.0), big_t


def log_linear_classifier(c: float = 0.1) -> Pipeline:
    """L2-regularised logistic regression on log-scaled, standardised features.

    Counts and durations are heavy-tailed; on a log scale "days since the last visit" against
    "visits so far" is close to linear in the log-odds (the recency/frequency trade-off of
    BG/NBD-style models), which small trees only approximate in steps. Missing values (e.g.
    days since a purchase that never happened) become the median plus a missing-indicator.
    """
    # scikit-learn is imported where a model is built, not when the server starts (~0.5 s).
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        FunctionTransformer(_signed_log1p),
        StandardScaler(),
        LogisticRegression(C=c, max_iter=2000),
    )


def churn_snapshot(
    events: pd.DataFrame,
    t0: Any,
    *,
    horizon_days: float = 30.0,
    user_col: str = "user_id",
    time_col: str = "timestamp",
    value_col: str | None = None,
    active_within_days: float | None = None,
) -> pd.DataFrame:
    """Features as of ``t0`` and the churn label over the next ``horizon_days``.

    One row per user active at or before ``t0``: ``recency_days``, ``tenure_days``,
    ``events_total``, ``events_30d``, ``events_90d``, ``active_days_30d``, ``value_total``
    (if ``value_col``), and ``churned`` = 1 when the user has no event in (t0, t0 + H].
    Times are UTC; ``snapshot`` holds ``t0``. ``active_within_days`` keeps only users with an
    event in the last that many days (long-gone users are not worth scoring).
    """
    import pandas as pd

    for col in (user_col, time_col, *([value_col] if value_col else [])):
        if col not in events:
            raise ValidationFailed(
                "event log lacks required columns",
                code="churn_invalid_events",
                details=[{"path": col, "message": "missing column"}],
            )
    t0 = pd.Timestamp(t0)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    ts = pd.to_datetime(events[time_col], utc=True)
    past = events[ts <= t0].assign(_ts=ts[ts <= t0])
    future_end = t0 + pd.Timedelta(days=horizon_days)
    returned = set(events.loc[(ts > t0) & (ts <= future_end), user_col])
    age_days = (t0 - past["_ts"]) / pd.Timedelta(days=1)
    past = past.assign(
        _age=age_days,
        _in30=(age_days <= 30).astype(int),
        _in90=(age_days <= 90).astype(int),
        _day30=np.where(age_days <= 30, np.floor(age_days), np.nan),
    )
    g = past.groupby(user_col)
    out = pd.DataFrame(
        {
            "recency_days": g["_age"].min(),
            "tenure_days": g["_age"].max(),
            "events_total": g.size(),
            "events_30d": g["_in30"].sum(),
            "events_90d": g["_in90"].sum(),
            "active_days_30d": g["_day30"].nunique(),
        }
    )
    if value_col:
        out["value_total"] = g[value_col].sum()
    if active_within_days is not None:
        out = out[out["recency_days"] <= active_within_days]
    out["churned"] = (~out.index.isin(list(returned))).astype(int)
    out["snapshot"] = t0
    return out


class ChurnModel:
    """Calibrated churn probability from a numeric feature frame.

    Parameters
    ----------
    method:
        ``"blend"`` (default: the mean probability of the ``"hist_gb"`` trees and a
        :func:`log_linear_classifier` over the same features), ``"hist_gb"``
        (HistGradientBoostingClassifier: non-linear, handles NaN), ``"log_linear"`` (only
        :func:`log_linear_classifier`) or ``"logistic"`` (standardised logistic regression on
        the raw features: transparent coefficients, used for the recency baseline).
        The blend was chosen on development splits of CDNOW that end before the test split's
        labels (``tests/ml/test_churn_cdnow.py``, docs/ml.md): the trees alone beat recency by
        +0.011 to +0.023 ROC AUC there, the log-linear model by +0.023 to +0.028, and the trees
        still catch non-monotone drivers (an open cart, a failed checkout) a linear model cannot.
    calibration:
        ``"sigmoid"`` (Platt) or ``"isotonic"``, fitted by ``cv``-fold CalibratedClassifierCV.
    min_per_class:
        Fewer examples of either class than this raise ``churn_too_little_data``.
    max_iter, learning_rate, max_depth, min_samples_leaf, l2_regularization:
        Boosting rounds, shrinkage and tree size of ``"hist_gb"``. The defaults are small,
        heavily regularised trees: churn data are a few thousand rows dominated by recency,
        and deeper trees (the scikit-learn defaults) overfit them and lose to recency alone.
        Chosen on a development split of CDNOW that ends before the test split's labels
        (``tests/ml/test_churn_cdnow.py``).
    horizon_days:
        The label's horizon H (churn = no activity in the next H days). When given, the model
        fits BG/NBD (:class:`avila.ml.clv.BetaGeoModel`, days, penalizer 0.001) to the training
        rows' activity history (:func:`activity_history`; the frame must hold
        :data:`ACTIVITY_HISTORY`) and adds BG/NBD's probability of no activity in the next H
        days (:meth:`~avila.ml.clv.BetaGeoModel.probability_no_purchase`) as a feature, so the
        classifier sees the label's probability under a model of the purchase process. Not
        the default: on the CDNOW development splits it did not beat the blend (docs/ml.md).
    """

    # Class-level defaults: models pickled before these settings existed (stored artifacts'
    # session model) unpickle without them and must still score.
    horizon_days: float | None = None
    bgnbd_: BetaGeoModel | None = None

    def __init__(
        self,
        method: Literal["blend", "hist_gb", "log_linear", "logistic"] = "blend",
        calibration: Literal["sigmoid", "isotonic"] = "sigmoid",
        cv: int = 3,
        min_per_class: int = 20,
        random_state: int = 0,
        max_iter: int = 100,
        learning_rate: float = 0.05,
        max_depth: int | None = 3,
        min_samples_leaf: int = 40,
        l2_regularization: float = 1.0,
        horizon_days: float | None = None,
    ) -> None:
        bad_horizon = horizon_days is not None and not (
            np.isfinite(horizon_days) and horizon_days > 0
        )
        if bad_horizon:
            raise ValidationFailed(
                "invalid churn model settings",
                code="churn_invalid_settings",
                details=[{"path": "horizon_days", "message": "a number of days > 0"}],
            )
        if method not in _METHODS or calibration not in ("sigmoid", "isotonic"):
            raise ValidationFailed(
                "invalid churn model settings",
                code="churn_invalid_settings",
                details=[
                    {"path": "method", "message": "blend, hist_gb, log_linear or logistic"},
                    {"path": "calibration", "message": "sigmoid or isotonic"},
                ],
            )
        self.method = method
        self.calibration = calibration
        self.cv = cv
        self.min_per_class = min_per_class
        self.random_state = random_state
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.horizon_days = horizon_days
        self.features_: list[str] | None = None
        self.model_: CalibratedClassifierCV | None = None
        self.bgnbd_: BetaGeoModel | None = None

    def _matrix(self, features: pd.DataFrame) -> np.ndarray:
        import pandas as pd

        if not isinstance(features, pd.DataFrame):
            raise ValidationFailed(
                "features must be a pandas DataFrame",
                code="churn_invalid_features",
                details=[{"path": "features", "message": type(features).__name__}],
            )
        columns = self.features_ if self.features_ is not None else list(features.columns)
        missing = [c for c in columns if c not in features]
        bad = [
            c for c in columns if c in features and not pd.api.types.is_numeric_dtype(features[c])
        ]
        if missing or bad or not columns:
            raise ValidationFailed(
                "features must be numeric columns (the ones used in fit)",
                code="churn_invalid_features",
                details=[{"path": c, "message": "missing"} for c in missing]
                + [{"path": c, "message": "not numeric"} for c in bad],
            )
        x = np.asarray(features[columns].to_numpy(dtype=float), dtype=float)
        if self.horizon_days is None:
            return x
        absent = [c for c in ACTIVITY_HISTORY if c not in features]
        if absent:
            raise ValidationFailed(
                "a churn model with a horizon needs the activity history columns",
                code="churn_invalid_features",
                details=[{"path": c, "message": "missing"} for c in absent],
            )
        history = activity_history(features)
        try:
            if self.bgnbd_ is None:  # fitting: BG/NBD learns from the training rows only
                self.bgnbd_ = BetaGeoModel(penalizer=0.001).fit(*history)
            silent = self.bgnbd_.probability_no_purchase(self.horizon_days, *history)
        except ValidationFailed as exc:
            too_little = exc.code == "clv_too_few_customers"
            raise ValidationFailed(
                f"activity history unfit for BG/NBD: {exc.message}",
                code="churn_too_little_data" if too_little else "churn_invalid_features",
                details=exc.details,
            ) from exc
        return np.column_stack([x, silent])

    def fit(self, features: pd.DataFrame, churned: Any) -> ChurnModel:
        """Fit on a feature frame and 0/1 labels (1 = churned)."""
        self.features_ = None
        self.bgnbd_ = None
        x = self._matrix(features)
        # A column with no value in any training row carries nothing to learn, and
        # HistGradientBoosting cannot bin it: leave it out, here and when predicting.
        kept = [c for c in features.columns if features[c].notna().any()]
        if not kept:
            raise ValidationFailed(
                "every feature column is empty",
                code="churn_invalid_features",
                details=[{"path": c, "message": "no values"} for c in features.columns],
            )
        if len(kept) < len(features.columns):
            self.features_ = kept
            x = self._matrix(features)
        y = np.asarray(churned, dtype=int)
        counts = (
            np.bincount(y, minlength=2)
            if len(y) == len(x) and set(np.unique(y)) <= {0, 1}
            else None
        )
        if counts is None or counts.min() < max(self.min_per_class, self.cv):
            raise ValidationFailed(
                f"need 0/1 labels with at least {self.min_per_class} of each class",
                code="churn_too_little_data",
                details=[
                    {
                        "path": "churned",
                        "message": f"class counts {None if counts is None else counts.tolist()}",
                    }
                ],
            )
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import HistGradientBoostingClassifier, VotingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.method in ("hist_gb", "blend"):
            trees = HistGradientBoostingClassifier(
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_depth=self.max_depth,
                min_samples_leaf=self.min_samples_leaf,
                l2_regularization=self.l2_regularization,
                random_state=self.random_state,
            )
            base: Any = (
                trees
                if self.method == "hist_gb"
                else VotingClassifier(
                    [("trees", trees), ("log_linear", log_linear_classifier())], voting="soft"
                )
            )
        elif self.method == "log_linear":
            base = log_linear_classifier()
        else:
            if np.isnan(x).any():
                raise ValidationFailed(
                    "logistic churn model does not accept missing values",
                    code="churn_invalid_features",
                    details=[{"path": "features", "message": "contains NaN"}],
                )
            base = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.model_ = CalibratedClassifierCV(base, method=self.calibration, cv=self.cv)
        self.model_.fit(x, y)
        self.features_ = kept
        return self

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated P(churn) per row."""
        require_fitted(self, "model_")
        assert self.model_ is not None
        return np.asarray(self.model_.predict_proba(self._matrix(features))[:, 1], dtype=float)

    def score(self, features: pd.DataFrame, churned: Any) -> dict[str, float]:
        """ROC AUC, PR AUC with base rate and Brier score on held-out data."""
        return classification_report(churned, self.predict_proba(features))


def evaluate_time_split(
    model: ChurnModel,
    snapshots: pd.DataFrame,
    *,
    test_snapshot: Any,
    horizon_days: float,
    feature_cols: list[str],
    label_col: str = "churned",
    snapshot_col: str = "snapshot",
) -> dict[str, float]:
    """Train on snapshots whose label window closed by ``test_snapshot``; test on it.

    A training snapshot at t qualifies only when t + H <= test snapshot, so no training label
    looks at events the test features could not see. Returns :meth:`ChurnModel.score` plus
    ``n_train``.
    """
    import pandas as pd

    times = pd.to_datetime(snapshots[snapshot_col], utc=True)
    cutoff = pd.Timestamp(test_snapshot)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    train = snapshots[times + pd.Timedelta(days=horizon_days) <= cutoff]
    test = snapshots[times == cutoff]
    if train.empty or test.empty:
        raise ValidationFailed(
            "time split leaves no training or no test snapshots",
            code="churn_too_little_data",
            details=[
                {"path": snapshot_col, "message": f"{len(train)} train, {len(test)} test rows"}
            ],
        )
    model.fit(train[feature_cols], train[label_col])
    report = model.score(test[feature_cols], test[label_col])
    report["n_train"] = float(len(train))
    return report
