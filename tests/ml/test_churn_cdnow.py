"""Churn on real data: CDNOW (Fader, Hardie & Lee 2005), against recency and BG/NBD P(alive).

Protocol (fixed and written before the first run, 2026-11-30):

* Data: the CDNOW 1/10th sample in the lifetimes 0.11.3 wheel (2,357 customers who first
  bought in Q1 1997; transactions to June 1998). Same-day transactions are one purchase day.
* Time split: calibration = the 39 weeks 1997-01-01 … 1997-09-30 (features, and the BG/NBD
  fit, use only these), holdout = the next 39 weeks, 1997-10-01 … 1998-06-30.
  Churn = 1 when the customer makes no purchase in the holdout.
* Our model: the product's own path — each purchase day becomes a row of the daily activity
  table, :func:`avila.ml.features.user_snapshot` at t₀ = 1997-10-01 gives the snapshot
  features, :class:`avila.ml.churn.ChurnModel` (defaults; calibrated gradient boosting until the
  third run, the tree + log-linear blend since)
  learns churn.
* Folds: customers in 5 stratified folds (scikit-learn ``StratifiedKFold``, shuffled, seed
  0); each fold is scored by a model trained on the other four. Features are all before t₀
  and labels all after it, so no fold sees the future of its features.
* Baselines on the same folds: recency (days since the last purchase at t₀; longer = more
  churn) and 1 − P(alive) of BG/NBD (:class:`avila.ml.clv.BetaGeoModel`, weeks) fitted on
  the training folds' calibration summaries.
* Margins: mean ROC AUC over the 5 folds ≥ recency + 0.01 and ≥ BG/NBD + 0.02; and ours
  above recency in at least 4 of the 5 folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from avila.ml.churn import ChurnModel
from avila.ml.clv import BetaGeoModel, summarise_transactions
from avila.ml.evaluation import roc_auc
from avila.ml.features import COUNTED_TYPES, SNAPSHOT_FEATURES, user_snapshot

T0 = pd.Timestamp("1997-10-01")
HORIZON_DAYS = 39 * 7
FOLDS = 5
RECENCY_MARGIN = 0.01
BGNBD_MARGIN = 0.02


def _daily(transactions: pd.DataFrame) -> pd.DataFrame:
    """The product's daily activity table: one row per customer and purchase day."""
    days = (
        transactions.groupby(["customer_id", "date"], as_index=False)
        .agg(purchase=("dollars", "size"), revenue=("dollars", "sum"))
        .rename(columns={"customer_id": "user_id", "date": "day"})
    )
    days["user_id"] = days["user_id"].astype(str)
    days["purchase"] = 1
    days["events"] = days["purchase"]
    days["sessions"] = 1
    for kind in COUNTED_TYPES:
        if kind != "purchase":
            days[kind] = 0
    days["first_ts"] = days["last_ts"] = days["day"] + pd.Timedelta(hours=12)
    return days


@pytest.fixture(scope="module")
def fold_aucs(cdnow_transactions: pd.DataFrame) -> pd.DataFrame:
    snap = user_snapshot(_daily(cdnow_transactions), T0, horizon_days=HORIZON_DAYS)
    assert len(snap) == 2357  # every customer bought in Q1 1997
    cal = cdnow_transactions[cdnow_transactions["date"] < T0].assign(
        customer_id=lambda f: f["customer_id"].astype(str)
    )
    summary = summarise_transactions(
        cal, customer_col="customer_id", time_col="date", value_col="dollars",
        observation_end=T0, unit_days=7.0,
    ).reindex(snap.index)  # fmt: skip
    y = snap["churned"].to_numpy()
    rows = []
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0)
    # One OpenMP thread, as training does: spinning threads crawl on a shared machine.
    with threadpool_limits(limits=1):
        folds = list(splitter.split(snap, y))
    for fold, (train, test) in enumerate(folds):
        with threadpool_limits(limits=1):
            model = ChurnModel().fit(snap.iloc[train][SNAPSHOT_FEATURES], y[train])
            ours = model.predict_proba(snap.iloc[test][SNAPSHOT_FEATURES])
        s_train, s_test = summary.iloc[train], summary.iloc[test]
        bg = BetaGeoModel().fit(s_train["frequency"], s_train["recency"], s_train["T"])
        alive = bg.probability_alive(s_test["frequency"], s_test["recency"], s_test["T"])
        rows.append(
            {
                "fold": fold,
                "ours": roc_auc(y[test], ours),
                "recency": roc_auc(y[test], snap.iloc[test]["recency_days"]),
                "bgnbd": roc_auc(y[test], 1 - np.asarray(alive)),
                "base_rate": float(y[test].mean()),
            }
        )
    table = pd.DataFrame(rows)
    print(table.round(4).to_string(), "\nmean", table.mean().round(4).to_dict())
    return table


def test_churn_labels_follow_the_time_split(cdnow_transactions: pd.DataFrame) -> None:
    snap = user_snapshot(_daily(cdnow_transactions), T0, horizon_days=HORIZON_DAYS)
    holdout = cdnow_transactions[
        (cdnow_transactions["date"] >= T0)
        & (cdnow_transactions["date"] < T0 + pd.Timedelta(days=HORIZON_DAYS))
    ]
    returned = set(holdout["customer_id"].astype(str))
    expected = pd.Series([int(u not in returned) for u in snap.index], index=snap.index)
    assert (snap["churned"] == expected).all()
    assert 0.5 < snap["churned"].mean() < 0.9  # most CDNOW customers never come back


def test_our_churn_model_beats_bgnbd_p_alive_across_folds(fold_aucs: pd.DataFrame) -> None:
    mean = fold_aucs.mean()
    assert mean["ours"] >= mean["bgnbd"] + BGNBD_MARGIN
    # 1 − P(alive) ranks worse than chance here: BG/NBD gives every one-time buyer P(alive) = 1,
    # and they are the customers least likely to come back.
    assert mean["bgnbd"] < 0.5


#: First run (2026-11-30), per fold ours / recency: 0.761/0.800, 0.687/0.725, 0.759/0.811,
#: 0.724/0.748, 0.736/0.774; mean 0.733 vs 0.772 (BG/NBD 0.316, base rate 0.710). The
#: product's churn model (boosted trees over the activity snapshot) loses to recency alone on
#: CDNOW; recorded as found (issue 12), not tuned.
#: Second run (2026-11-30 evening), after ChurnModel's defaults became small regularised trees
#: (depth 3, ≥ 40 rows per leaf, L2 1.0, 100 rounds at 0.05) — chosen on development splits
#: of CDNOW whose labels end by 1997-10-01 (t₀ 1997-07-01 / 13 weeks, where they beat recency
#: by +0.023 in 5 of 5 folds), never on this split: per fold 0.799/0.800, 0.733/0.725,
#: 0.804/0.811, 0.755/0.748, 0.759/0.774; mean 0.770 vs 0.772, ours ahead in 2 of 5 folds.
#: Still short of the +0.01 margin; no further tuning against this split. Strict: the day it
#: passes, this fails and the mark must go.
#: Third look (2026-11-30 night, written before the run): ChurnModel's default became the
#: blend of those trees with a log-linear logistic regression over the same features
#: (``method="blend"``), chosen on three development splits that read no transaction on or
#: after t₀ (``tests/ml/dev_churn_cdnow.py``: t₀ 1997-07-01 / 91 d, 06-01 / 122 d,
#: 05-01 / 153 d; blend vs recency +0.028, +0.019, +0.027, ahead in 10, 8, 9 of 10 folds).
#: Margins, split, folds and seed unchanged. Result of this third run, per fold ours /
#: recency: 0.807/0.800, 0.737/0.725, 0.812/0.811, 0.762/0.748, 0.772/0.774; mean 0.778 vs
#: 0.772 (+0.0065), ahead in 4 of 5 folds (BG/NBD 0.316). Meets the fold count, short of the
#: +0.01 mean margin: still a strict expected failure. The test split has now been looked at
#: three times; a fourth look needs a reason other than another model tweak.
#: Decision rule for a fourth look (2026-12-01 01:02 UTC, committed before any fourth look and
#: before the candidate is in the product): the candidate is grounded in the label's definition
#: — BG/NBD's probability of no purchase in the next H days (Fader & Hardie 2019, note 039,
#: eq. 34), fitted on the training rows' activity history, given to ChurnModel as a feature
#: when it knows its label horizon (``ChurnModel(horizon_days=H)``, as training.py builds the
#: churn model). The fourth look happens only if that new default beats the current blend on
#: the development splits of ``tests/ml/dev_churn_cdnow.py`` (three splits, 5 stratified folds
#: × seeds 0 and 1 each) by at least +0.005 ROC AUC, averaged over the three splits' mean
#: differences. If it does not, there is no fourth look and this mark stays as it is. If it
#: does, this split is run ONCE, the result is recorded here whatever it is (per fold ours /
#: recency, mean, folds ahead), the strict xfail goes only if every margin passes, and the
#: model is not changed again after that look. Margins, split, folds and seed unchanged.
#: (A scratch prototype of the candidate ran on the development splits before this was
#: written; nothing on or after 1997-10-01 has been scored since the third look.)
#: Outcome (2026-12-01 01:04 UTC, ``python -m tests.ml.dev_churn_cdnow``): blend+BG/NBD feature
#: vs the blend −0.0020, −0.0004, −0.0004 on the three development splits (mean −0.0010, short
#: of +0.005); BG/NBD's no-purchase probability alone beats recency by +0.005, +0.008, +0.016
#: but trails the blend by 0.010–0.023. So there was NO fourth look: the model is unchanged
#: (the feature stays opt-in, ``ChurnModel(horizon_days=H)``), the figures above are still the
#: latest on this split, and the mark stays.
@pytest.mark.xfail(
    strict=True, reason="ours 0.778 vs recency 0.772 mean AUC on CDNOW (+0.01 needed)"
)
def test_our_churn_model_beats_recency_across_folds(fold_aucs: pd.DataFrame) -> None:
    mean = fold_aucs.mean()
    assert mean["ours"] >= mean["recency"] + RECENCY_MARGIN
    assert (fold_aucs["ours"] > fold_aucs["recency"]).sum() >= FOLDS - 1
