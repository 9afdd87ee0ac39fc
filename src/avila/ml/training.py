"""Train every model of a project from its stored events, evaluate each, precompute scores.

One run (:func:`train_project`) reads the store once (:mod:`avila.ml.features`) and:

1. **churn** — weekly snapshots, label "no activity in [t₀, t₀ + H)"; a calibrated blend of
   gradient-boosted trees and a log-linear logistic regression (:class:`ChurnModel`), evaluated on the newest snapshot whose label window has closed, trained only on
   snapshots whose windows closed before it (time split), next to a recency-only baseline;
2. **conversion** — the same snapshots, label "purchases in [t₀, t₀ + H_c)";
3. **session conversion** — session prefixes, label "a purchase follows in the session",
   split by session start time, next to a funnel-stage baseline (carts, checkouts);
4. **recommendations** — item-kNN (view 1, cart 3, purchase 5), evaluated on items users
   first carted/bought after a time split, next to popularity; "also bought" from purchases;
5. **CLV** — BG/NBD + Gamma-Gamma on purchases (weeks), evaluated on a holdout period
   against each user's past purchase rate;
6. **next best action** — eligibility rules and propensity × value − cost over the above;
7. **anomalies** — seasonal detectors on the hourly metric series, streaming detector on
   the last day's minutes (see :mod:`avila.ml.monitoring`).

Final models are refitted on all labelled data and score every user as of the data's end;
the scores are what the predictions endpoint serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from threadpoolctl import threadpool_limits

from avila.errors import ValidationFailed
from avila.ml.churn import ChurnModel
from avila.ml.customer_value import (
    ACTION_COST,
    RESPONSE_LIFT,
    ClvFitFailed,
    action_reason,
    fit_clv,
    next_best_actions,
)
from avila.ml.evaluation import classification_report, evaluate_recommender
from avila.ml.features import (
    SESSION_FEATURES,
    SNAPSHOT_FEATURES,
    EventData,
    load_event_data,
    load_session_prefixes,
    user_snapshot,
)
from avila.ml.monitoring import metric_series, seasonal_anomalies, streaming_anomalies
from avila.ml.recommend import ItemKNNRecommender, PopularityRecommender
from avila.storage.base import Store

if TYPE_CHECKING:
    import pandas as pd  # loaded by the first fit or read: the app starts without it

__all__ = [
    "InsufficientTrainingData",
    "TrainedModels",
    "TrainingOptions",
    "train_project",
]

MODEL_NAMES = ("churn", "conversion", "session_conversion", "recommendations", "clv", "nba")


class InsufficientTrainingData(ValidationFailed):
    """The project's events cannot train the models; ``details`` name what is missing."""

    code = "insufficient_training_data"


@dataclass(frozen=True)
class TrainingOptions:
    """Training settings. Horizons ``None`` pick the longest that the data allows (history,
    a week of training snapshots and two horizons), up to 14 days (churn) and 7 days
    (conversion), and at least 3 days. ``snapshot_step_days`` ``None`` takes weekly
    snapshots from 8 weeks of data and daily ones below that (so a month of data still
    has enough labelled rows; overlapping snapshots are fine for training)."""

    churn_horizon_days: int | None = None
    conversion_horizon_days: int | None = None
    snapshot_step_days: int | None = None
    min_history_days: int = 7
    active_within_days: int = 28
    min_users: int = 50
    recommendations: int = 10
    anomaly_window_hours: int = 168
    margin: float = 0.3


@dataclass
class TrainedModels:
    """What serving needs: per-user scores, fallbacks and the few models used per request."""

    project_id: str
    version: int
    trained_at: str
    as_of: str
    users: dict[str, dict[str, Any]]
    popularity: list[tuple[str, float]]
    also_bought: dict[str, list[tuple[str, float]]]
    base_rates: dict[str, float]
    session_model: ChurnModel | None
    seasonal: dict[str, Any] = field(default_factory=dict)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[str], None]


def _auto_horizon(span: float, wanted: int | None, cap: int, opts: TrainingOptions) -> int:
    if wanted is not None:
        return wanted
    # Room for the history, a week of training snapshots, and two label windows (the
    # training snapshots' and the test snapshot's).
    fit = int((span - opts.min_history_days - 7) // 2)
    return max(3, min(cap, fit))


def _check(data: EventData, opts: TrainingOptions, h_churn: int, h_conv: int) -> None:
    missing: list[dict[str, Any]] = []
    users = data.daily["user_id"].nunique()
    if users < opts.min_users:
        missing.append(
            {
                "path": "users",
                "message": f"need at least {opts.min_users} users with events, have {users}",
            }
        )
    need = opts.min_history_days + 2 * max(h_churn, h_conv)
    if data.bulk_span_days < need:
        missing.append(
            {
                "path": "history_days",
                "message": f"need at least {need} days of events ({opts.min_history_days} of "
                f"history + 2 × {max(h_churn, h_conv)}-day horizon), have {data.bulk_span_days:.1f}",
            }
        )
    buyers = data.purchases["user_id"].nunique()
    if buyers < 20:
        missing.append(
            {"path": "purchases", "message": f"need purchases by at least 20 users, have {buyers}"}
        )
    products = data.interactions["item_id"].nunique()
    if products < 2:
        missing.append(
            {"path": "products", "message": f"need events on at least 2 products, have {products}"}
        )
    if missing:
        raise InsufficientTrainingData(
            "too little data to train the models: " + "; ".join(m["message"] for m in missing),
            details=missing,
        )


def _snapshots(
    data: EventData, horizon: int, opts: TrainingOptions
) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Weekly snapshots back from the newest one whose label window closed; (frame, test t₀)."""
    import pandas as pd

    start = data.bulk_start
    assert start is not None
    day = pd.Timedelta(days=1)
    last_day = data.end.floor("D")
    test_t0 = last_day - horizon * day
    earliest = start.floor("D") + opts.min_history_days * day
    frames = []
    t0 = test_t0
    step = opts.snapshot_step_days or (7 if data.bulk_span_days >= 56 else 1)
    while t0 >= earliest:
        frames.append(
            user_snapshot(
                data.daily,
                t0,
                horizon_days=horizon,
                conversion_horizon_days=horizon,
                active_within_days=opts.active_within_days,
            )
        )
        t0 -= step * day
    return pd.concat(frames), test_t0


def _boosted() -> ChurnModel:
    return ChurnModel(method="hist_gb", max_iter=100, learning_rate=0.1)


def _snapshot_model() -> ChurnModel:
    """Churn and conversion: ChurnModel's defaults (trees + log-linear blend), the model the
    CDNOW test measures."""
    return ChurnModel()


def _fail(name: str, exc: ValidationFailed) -> InsufficientTrainingData:
    return InsufficientTrainingData(
        f"too little data to train the {name} model: {exc.message}",
        details=[{"path": name, "message": exc.message}, *exc.details],
    )


def _supervised(
    name: str, label: str, data: EventData, horizon: int, opts: TrainingOptions
) -> tuple[ChurnModel, dict[str, Any]]:
    """Time-split evaluation against a recency-only baseline, then a refit on all snapshots."""
    import pandas as pd

    snaps, test_t0 = _snapshots(data, horizon, opts)
    train = snaps[snaps["snapshot"] + horizon * pd.Timedelta(days=1) <= test_t0]
    test = snaps[snaps["snapshot"] == test_t0]
    try:
        model = _snapshot_model().fit(train[SNAPSHOT_FEATURES], train[label])
        baseline = ChurnModel(method="logistic").fit(train[["recency_days"]], train[label])
        report = classification_report(test[label], model.predict_proba(test[SNAPSHOT_FEATURES]))
        base = classification_report(test[label], baseline.predict_proba(test[["recency_days"]]))
        final = _snapshot_model().fit(snaps[SNAPSHOT_FEATURES], snaps[label])
    except ValidationFailed as exc:
        raise _fail(name, exc) from exc
    metrics = {
        **report,
        "baseline": {"name": "recency_only_logistic", **base},
        "horizon_days": horizon,
        "n_train": len(train),
        "test_snapshot": test_t0.isoformat() + "Z",
        "training_window": {
            "start": snaps["snapshot"].min().isoformat() + "Z",
            "end": data.end.isoformat() + "Z",
        },
    }
    return final, metrics


def _session_model(
    store: Store, data: EventData, opts: TrainingOptions
) -> tuple[ChurnModel | None, dict[str, Any]]:
    import pandas as pd

    total = int(data.daily["events"].sum())
    prefixes = load_session_prefixes(
        store, data.project_id, data.end, sample_every=max(1, total // 40_000)
    )
    if prefixes.empty or prefixes["purchased"].sum() < 20:
        return None, {"status": "skipped", "reason": "fewer than 20 sessions with a purchase"}
    split = data.end - max(7.0, data.bulk_span_days * 0.2) * pd.Timedelta(days=1)
    train = prefixes[prefixes["session_start"] < split]
    test = prefixes[prefixes["session_start"] >= split]
    try:
        model = _boosted().fit(train[SESSION_FEATURES], train["purchased"])
        stage = ["carts", "checkouts"]
        baseline = ChurnModel(method="logistic").fit(train[stage], train["purchased"])
        report = classification_report(
            test["purchased"], model.predict_proba(test[SESSION_FEATURES])
        )
        base = classification_report(test["purchased"], baseline.predict_proba(test[stage]))
        final = _boosted().fit(prefixes[SESSION_FEATURES], prefixes["purchased"])
    except ValidationFailed as exc:
        return None, {"status": "skipped", "reason": exc.message}
    return final, {
        **report,
        "baseline": {"name": "funnel_stage_logistic", **base},
        "split": split.isoformat() + "Z",
        "n_train": len(train),
    }


def _recommendations(
    data: EventData, opts: TrainingOptions
) -> tuple[
    dict[str, list[tuple[str, float]]], list[tuple[str, float]], dict[str, Any], dict[str, Any]
]:
    import pandas as pd

    inter = data.interactions
    split = data.end - max(7.0, data.bulk_span_days * 0.2) * pd.Timedelta(days=1)
    train = inter[inter["ts"] < split]
    later = inter[(inter["ts"] >= split) & inter["event"].isin(["cart", "purchase"])]
    owned = set(zip(train["user_id"], train["item_id"], strict=True))
    test = later[
        [(u, i) not in owned for u, i in zip(later["user_id"], later["item_id"], strict=True)]
    ]
    test = test[test["user_id"].isin(set(train["user_id"]))]
    k = opts.recommendations
    metrics: dict[str, Any] = {"k": k, "split": split.isoformat() + "Z"}
    if not train.empty and not test.empty:
        # Exclude everything seen in training: the test items are new to each user.
        metrics.update(evaluate_recommender(ItemKNNRecommender(neighbours=50), train, test, k=k))
        metrics["baseline"] = {
            "name": "popularity",
            **evaluate_recommender(PopularityRecommender(), train, test, k=k),
        }
    model = ItemKNNRecommender(neighbours=50, exclude_events={"purchase"}).fit(inter)
    users = list(model.users_) if model.users_ is not None else []
    ranked = model.recommend_many_scored(users, n=k)
    per_user = {str(u): [(str(i), s) for i, s in r] for u, r in zip(users, ranked, strict=True)}
    popularity = [(str(i), s) for i, s in model.recommend("\x00cold-start", n=k)]
    also: dict[str, list[tuple[str, float]]] = {}
    bought = inter[inter["event"] == "purchase"]
    source = (
        ItemKNNRecommender(neighbours=50).fit(bought) if bought["item_id"].nunique() > 1 else model
    )
    assert source.items_ is not None
    for item in source.items_:
        also[str(item)] = [(str(i), s) for i, s in source.also_bought(item, n=k) if s > 0]
    return per_user, popularity, also, metrics


def train_project(
    store: Store,
    project_id: str,
    options: TrainingOptions | None = None,
    progress: Progress | None = None,
) -> tuple[TrainedModels, dict[str, Any]]:
    """Train, evaluate and score; returns the artifact and the run's metadata (metrics).

    Raises :class:`InsufficientTrainingData` (HTTP 422) naming what is missing.
    """
    # One BLAS/OpenMP thread: training runs beside the server (or other jobs), where
    # oversubscribed OpenMP threads spin and run several times slower than one thread.
    # threadpoolctl limits only the runtimes already loaded, and scikit-learn (its OpenMP)
    # and SciPy (its BLAS) are imported where they are used: load them first.
    import scipy.linalg  # noqa: F401
    import sklearn.ensemble  # noqa: F401

    with threadpool_limits(limits=1):
        return _train(store, project_id, options or TrainingOptions(), progress)


def _train(
    store: Store, project_id: str, opts: TrainingOptions, progress: Progress | None
) -> tuple[TrainedModels, dict[str, Any]]:
    say = progress or (lambda _stage: None)
    started = time.perf_counter()
    say("reading events")
    data = load_event_data(store, project_id)
    h_churn = _auto_horizon(data.bulk_span_days, opts.churn_horizon_days, 14, opts)
    h_conv = _auto_horizon(data.bulk_span_days, opts.conversion_horizon_days, 7, opts)
    _check(data, opts, h_churn, h_conv)
    metrics: dict[str, Any] = {}

    say("churn")
    churn_model, metrics["churn"] = _supervised("churn", "churned", data, h_churn, opts)
    say("conversion")
    conv_model, metrics["conversion"] = _supervised("conversion", "converted", data, h_conv, opts)
    say("session conversion")
    session_model, metrics["session_conversion"] = _session_model(store, data, opts)
    say("recommendations")
    recs, popularity, also, metrics["recommendations"] = _recommendations(data, opts)
    say("customer lifetime value")
    try:
        clv, metrics["clv"] = fit_clv(data)
    except ClvFitFailed as exc:
        raise _fail("clv", exc.args[0]) from exc.args[0]

    say("scoring users")
    now = user_snapshot(data.daily, data.end, horizon_days=h_churn)
    customers = now[SNAPSHOT_FEATURES].copy()
    customers["churn_probability"] = churn_model.predict_proba(now[SNAPSHOT_FEATURES])
    customers["conversion_probability"] = conv_model.predict_proba(now[SNAPSHOT_FEATURES])
    mean_order = float(data.purchases["value"].mean())
    customers = customers.join(clv, how="left")
    customers["p_alive"] = customers["p_alive"].fillna(1.0)
    customers["expected_order_value"] = customers["expected_order_value"].fillna(mean_order)
    customers["clv_12m"] = customers["clv_12m"].fillna(0.0)
    customers["expected_purchases_30d"] = customers["expected_purchases_30d"].fillna(0.0)
    customers["purchase_total"] = customers["purchase_total"]
    customers["has_recommendations"] = [bool(recs.get(str(u))) for u in customers.index]
    customers["cart_value"] = _open_cart_values(store, project_id, data, customers)

    say("next best action")
    decisions = next_best_actions(customers, opts.margin)
    metrics["nba"] = {
        "actions": decisions["action"].value_counts().to_dict(),
        "response_lift": RESPONSE_LIFT,
        "cost": ACTION_COST,
        "margin": opts.margin,
    }

    say("anomalies")
    anomalies, seasonal, metrics["anomalies"] = _anomalies(store, data, opts)

    users: dict[str, dict[str, Any]] = {}
    for uid, c, d in zip(
        customers.index, customers.itertuples(), decisions.itertuples(), strict=True
    ):
        users[str(uid)] = {
            "churn_probability": round(float(c.churn_probability), 6),
            "conversion_probability": round(float(c.conversion_probability), 6),
            "recommendations": [
                {"product_id": i, "score": round(s, 6)} for i, s in recs.get(str(uid), popularity)
            ],
            "next_best_action": {
                "action": d.action,
                "reason": action_reason(decisions.loc[uid], customers.loc[uid]),
                "expected_value": round(float(d.expected_net), 4),
            },
            "clv": {
                "p_alive": round(float(c.p_alive), 6),
                "expected_purchases_30d": round(float(c.expected_purchases_30d), 6),
                "expected_order_value": round(float(c.expected_order_value), 4),
                "clv_12m": round(float(c.clv_12m), 4),
            },
        }
    trained_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    base_rates = {
        "churn": float(metrics["churn"]["base_rate"]),
        "conversion": float(metrics["conversion"]["base_rate"]),
    }
    artifact = TrainedModels(
        project_id=project_id,
        version=0,
        trained_at=trained_at,
        as_of=data.end.isoformat() + "Z",
        users=users,
        popularity=popularity,
        also_bought=also,
        base_rates=base_rates,
        session_model=session_model,
        seasonal=seasonal,
        anomalies=anomalies,
        metrics=metrics,
    )
    assert data.start is not None
    meta = {
        "trained_at": trained_at,
        "training_window": {
            "start": data.start.isoformat() + "Z",
            "end": data.end.isoformat() + "Z",
        },
        "users_scored": len(users),
        "duration_seconds": round(time.perf_counter() - started, 3),
        "models": {name: {"metrics": metrics.get(name, {})} for name in MODEL_NAMES},
        "anomalies": metrics["anomalies"],
    }
    say("done")
    return artifact, meta


def _open_cart_values(
    store: Store, project_id: str, data: EventData, customers: pd.DataFrame
) -> pd.Series:
    """Value (price × quantity) of carted items after the user's last purchase (every carted
    item when the user never bought), per user."""
    import pandas as pd

    # ``p.buys`` marks a user with purchases: without a match DuckDB gives NULLs, ClickHouse
    # the types' defaults (0, and 1970-01-01 for ``last_buy``; see
    # avila.storage.clickhouse.analytics_sql), so "no purchase" is never a time to compare.
    rows = store.query(
        """
        SELECT c.user_id, sum(coalesce(c.price, 0) * coalesce(c.quantity, 1))
        FROM events c
        LEFT JOIN (SELECT user_id, max(ts) AS last_buy, count(*) AS buys FROM events
                   WHERE project_id = ? AND event_type = 'purchase' GROUP BY user_id) p
          ON p.user_id = c.user_id
        WHERE c.project_id = ? AND c.event_type = 'add_to_cart' AND c.ts < ?
          AND (coalesce(p.buys, 0) = 0 OR c.ts > p.last_buy)
        GROUP BY c.user_id
        """,
        [project_id, project_id, data.end.to_pydatetime()],
    )
    values = pd.Series({str(u): float(v or 0.0) for u, v in rows}, dtype=float)
    out = values.reindex([str(u) for u in customers.index]).fillna(0.0)
    out.index = customers.index
    return out.where(customers["open_cart"] > 0, 0.0)


def _anomalies(
    store: Store, data: EventData, opts: TrainingOptions
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    import pandas as pd

    bulk_start = data.bulk_start
    assert bulk_start is not None
    end = data.end.ceil("h").to_pydatetime()
    start = bulk_start.floor("h").to_pydatetime()
    hourly = metric_series(store, data.project_id, start, end)
    found, seasonal = seasonal_anomalies(hourly, window_hours=opts.anomaly_window_hours)
    minute_start = max(start, end - pd.Timedelta(hours=24).to_pytimedelta())
    minutely = metric_series(store, data.project_id, minute_start, end, bucket_seconds=60)
    streamed, _ = streaming_anomalies(minutely)
    found.extend(streamed)
    summary = {
        "metrics": list(hourly.columns),
        "seasonal_found": len(found) - len(streamed),
        "streaming_found": len(streamed),
        "window_hours": opts.anomaly_window_hours,
    }
    return found, seasonal, summary
