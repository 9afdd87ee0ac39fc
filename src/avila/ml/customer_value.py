"""What training computes per customer besides the classifiers: lifetime value and the next
best action.

* :func:`fit_clv` — BG/NBD + Gamma-Gamma on purchases (weeks) per user, with a holdout check
  (:func:`clv_holdout`) against each user's past purchase rate;
* :func:`next_best_actions` — the action catalogue (eligibility rules, propensity × value −
  cost) over the scores; :func:`action_reason` says a decision in words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from avila.errors import ValidationFailed
from avila.ml.clv import (
    BetaGeoModel,
    GammaGammaModel,
    customer_lifetime_value,
    summarise_transactions,
)
from avila.ml.features import EventData
from avila.ml.nba import Action, NextBestAction

if TYPE_CHECKING:
    import pandas as pd  # loaded by the first fit or read: the app starts without it


class ClvFitFailed(Exception):
    """The BG/NBD or Gamma-Gamma fit refused the data (``args[0]``: its ValidationFailed)."""


def fit_clv(data: EventData) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per user p_alive, expected purchases (30 days), expected order value, 12-month CLV."""
    import pandas as pd

    purchases = data.purchases
    week = 7.0
    summary = summarise_transactions(
        purchases, customer_col="user_id", time_col="ts", value_col="value",
        observation_end=data.end, unit_days=week,
    )  # fmt: skip
    fit_rows = summary[summary["T"] > 0]
    try:
        bg = BetaGeoModel(penalizer=0.001).fit(
            fit_rows["frequency"], fit_rows["recency"], fit_rows["T"]
        )
        repeat = fit_rows[(fit_rows["frequency"] > 0) & (fit_rows["monetary_value"] > 0)]
        gg = GammaGammaModel(penalizer=0.001).fit(repeat["frequency"], repeat["monetary_value"])
    except ValidationFailed as exc:
        raise ClvFitFailed(exc) from exc
    x, tx, big_t = fit_rows["frequency"], fit_rows["recency"], fit_rows["T"]
    money = fit_rows["monetary_value"]
    out = pd.DataFrame(
        {
            "p_alive": bg.probability_alive(x, tx, big_t),
            "expected_purchases_30d": bg.predict(30 / week, x, tx, big_t),
            "expected_order_value": gg.predict(x, money),
            "clv_12m": customer_lifetime_value(
                bg, gg, x, tx, big_t, money, periods=12, period_length=30 / week
            ),
        },
        index=fit_rows.index,
    )
    metrics: dict[str, Any] = {
        "bgnbd": bg.params_,
        "gamma_gamma": gg.params_,
        "customers": len(fit_rows),
        "repeat_buyers": len(repeat),
        "time_unit": "weeks",
    }
    metrics.update(clv_holdout(data))
    return out, metrics


def clv_holdout(data: EventData) -> dict[str, Any]:
    """Fit on all but the last quarter (at most 28 days); compare predicted purchase days in
    the holdout with each user's calibration-period rate (MAE, both)."""
    import pandas as pd

    hold = min(28.0, data.bulk_span_days * 0.25)
    cut = data.end - hold * pd.Timedelta(days=1)
    cal = data.purchases[data.purchases["ts"] < cut]
    if cal.empty:
        return {}
    summary = summarise_transactions(
        cal, customer_col="user_id", time_col="ts", value_col="value",
        observation_end=cut, unit_days=7.0,
    )  # fmt: skip
    summary = summary[summary["T"] > 0]
    try:
        bg = BetaGeoModel(penalizer=0.001).fit(
            summary["frequency"], summary["recency"], summary["T"]
        )
    except ValidationFailed:
        return {}
    later = data.purchases[data.purchases["ts"] >= cut]
    actual = (
        later.assign(day=later["ts"].dt.floor("D"))
        .groupby("user_id")["day"]
        .nunique()
        .reindex(summary.index, fill_value=0)
    )
    predicted = bg.predict(hold / 7.0, summary["frequency"], summary["recency"], summary["T"])
    naive = (summary["frequency"] + 1) / np.maximum(summary["T"], 1e-9) * hold / 7.0
    return {
        "holdout_days": hold,
        "holdout_mae": float(np.mean(np.abs(predicted - actual))),
        "holdout_predicted_total": float(np.sum(predicted)),
        "holdout_actual_total": float(actual.sum()),
        "baseline": {
            "name": "past_rate",
            "holdout_mae": float(np.mean(np.abs(naive - actual))),
            "holdout_predicted_total": float(np.sum(naive)),
        },
    }


#: Action catalogue. Propensities come from the calibrated models times an assumed response
#: lift (no campaign-response data exists yet); values are margins in the store's currency.
RESPONSE_LIFT = {"win_back_offer": 0.10, "cart_reminder": 0.25, "cross_sell": 0.10, "upsell": 0.05}
ACTION_COST = {"win_back_offer": 5.0, "cart_reminder": 0.05, "cross_sell": 0.10, "upsell": 0.10}


def next_best_actions(customers: pd.DataFrame, margin: float) -> pd.DataFrame:
    """Each customer's next best action (:class:`NextBestAction` over the catalogue)."""
    import pandas as pd

    eov = customers["expected_order_value"]
    values = {
        "win_back_offer": customers["clv_12m"] * margin,
        "cart_reminder": customers["cart_value"].where(customers["cart_value"] > 0, eov) * margin,
        "cross_sell": eov * margin,
        "upsell": eov * 0.5 * margin,
    }
    rules: dict[str, list[tuple[str, str, Any]]] = {
        "win_back_offer": [("churn_probability", ">=", 0.5), ("purchase_total", ">=", 1)],
        "cart_reminder": [("open_cart", "==", 1.0)],
        "cross_sell": [("purchase_total", ">=", 1), ("has_recommendations", "==", True)],
        "upsell": [("purchase_total", ">=", 2), ("churn_probability", "<", 0.3)],
    }
    propensity = pd.DataFrame(
        {
            "win_back_offer": customers["churn_probability"] * customers["p_alive"],
            "cart_reminder": customers["conversion_probability"],
            "cross_sell": customers["conversion_probability"],
            "upsell": customers["conversion_probability"],
        },
        index=customers.index,
    )
    # Values differ per customer while an Action has one value: decide with value = the
    # largest and the propensity scaled by value_i / largest, so p·value_i − cost is exact.
    scaled = propensity.copy()
    catalogue = []
    for name, rule in rules.items():
        p = (propensity[name] * RESPONSE_LIFT[name]).clip(0, 1)
        top = float(max(values[name].max(), 1e-9))
        scaled[name] = (p * values[name] / top).clip(0, 1)
        catalogue.append(Action(name, value=top, cost=ACTION_COST[name], rules=rule))
    return NextBestAction(catalogue).decide(customers, scaled)


def action_reason(row: pd.Series, customer: pd.Series) -> str:
    """The decision ``row`` for ``customer`` in words."""
    action = row["action"]
    if action == "no_action":
        blocked = [r for r in str(row["reason"]).split("; ") if "ineligible" in r]
        return "no eligible action has a positive expected value" + (
            f" ({'; '.join(blocked)})" if blocked else ""
        )
    why = {
        "win_back_offer": f"churn risk {customer['churn_probability']:.0%} for a past buyer "
        f"(12-month CLV {customer['clv_12m']:.2f})",
        "cart_reminder": f"open cart worth {customer['cart_value']:.2f}, conversion "
        f"{customer['conversion_probability']:.0%}",
        "cross_sell": f"buyer with recommendations, conversion "
        f"{customer['conversion_probability']:.0%}",
        "upsell": f"repeat buyer ({int(customer['purchase_total'])} purchases), churn risk "
        f"{customer['churn_probability']:.0%}",
    }[action]
    return f"{why}; expected net value {row['expected_net']:.2f}"
