"""Development splits of CDNOW for the churn model (run by hand; not collected by pytest).

``PYTHONPATH=src python -m tests.ml.dev_churn_cdnow`` prints mean ROC AUC of each candidate
model against recency on three splits whose labels all end by 1997-10-01, the start of the test
split's holdout in ``test_churn_cdnow.py``: no transaction on or after that day is read. Model
choices (tree size, the tree + log-linear blend) were made here, never on the test split.
Folds: 5 stratified customer folds for each of seeds 0 and 1.

Candidates: ChurnModel's methods; ``blend+bgnbd`` (the blend given the label horizon, so it adds
BG/NBD's probability of no activity in the horizon as a feature); ``bgnbd_silent`` (that BG/NBD
probability alone, fitted on the training folds); ``bgnbd_p_alive`` (1 − P(alive), the test's
baseline). Each line also gives the difference from the current default (``blend``), the
quantity the fourth-look decision rule in ``test_churn_cdnow.py`` reads: the mean over the
three splits of ``blend+bgnbd`` − ``blend`` must be ≥ +0.005.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from avila.ml.churn import ChurnModel, activity_history
from avila.ml.clv import BetaGeoModel
from avila.ml.evaluation import roc_auc
from avila.ml.features import SNAPSHOT_FEATURES, user_snapshot
from tests.ml.conftest import WHEEL_DIR
from tests.ml.test_churn_cdnow import T0, _daily

#: (t₀, horizon days); every t₀ + horizon ≤ the test split's t₀.
DEV_SPLITS = [
    (pd.Timestamp("1997-07-01"), 91),
    (pd.Timestamp("1997-06-01"), 122),
    (pd.Timestamp("1997-05-01"), 153),
]
CANDIDATES = ("blend", "hist_gb", "log_linear")
EXTRA = ("blend+bgnbd", "bgnbd_silent", "bgnbd_p_alive")


def main() -> None:
    raw = zipfile.ZipFile(WHEEL_DIR / "Lifetimes-0.11.3-py3-none-any.whl").read(
        "lifetimes/datasets/CDNOW_sample.txt"
    )
    tx = pd.read_csv(
        io.BytesIO(raw), sep=r"\s+", header=None,
        names=["customer_id", "customer_id_master", "date", "cds", "dollars"],
    )  # fmt: skip
    tx["date"] = pd.to_datetime(tx["date"].astype(str), format="%Y%m%d")
    tx = tx[tx["date"] < T0]  # never read the test holdout
    assert tx["date"].max() < T0
    gains: list[float] = []
    for t0, horizon in DEV_SPLITS:
        assert t0 + pd.Timedelta(days=horizon) <= T0
        snap = user_snapshot(_daily(tx), t0, horizon_days=horizon)
        y = snap["churned"].to_numpy()
        aucs: dict[str, list[float]] = {name: [] for name in (*CANDIDATES, *EXTRA, "recency")}
        for seed in (0, 1):
            splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
            for train, test in splitter.split(snap, y):
                with threadpool_limits(limits=1):
                    for name in CANDIDATES:
                        model = ChurnModel(method=name).fit(  # type: ignore[arg-type]
                            snap.iloc[train][SNAPSHOT_FEATURES], y[train]
                        )
                        p = model.predict_proba(snap.iloc[test][SNAPSHOT_FEATURES])
                        aucs[name].append(roc_auc(y[test], p))
                    train_rows, test_rows = snap.iloc[train], snap.iloc[test]
                    with_horizon = ChurnModel(horizon_days=horizon).fit(
                        train_rows[SNAPSHOT_FEATURES], y[train]
                    )
                    p = with_horizon.predict_proba(test_rows[SNAPSHOT_FEATURES])
                    aucs["blend+bgnbd"].append(roc_auc(y[test], p))
                    bg = BetaGeoModel(penalizer=0.001).fit(*activity_history(train_rows))
                    history = activity_history(test_rows)
                    silent = bg.probability_no_purchase(horizon, *history)
                    aucs["bgnbd_silent"].append(roc_auc(y[test], silent))
                    alive = bg.probability_alive(*history)
                    aucs["bgnbd_p_alive"].append(roc_auc(y[test], 1 - alive))
                aucs["recency"].append(roc_auc(y[test], snap.iloc[test]["recency_days"]))
        print(f"t0 {t0.date()}, horizon {horizon} d, base rate {y.mean():.3f}")
        rec, blend = np.array(aucs["recency"]), np.array(aucs["blend"])
        for name, values in aucs.items():
            v = np.array(values)
            print(f"  {name:13s} {v.mean():.4f}  vs recency {v.mean() - rec.mean():+.4f}, "
                  f"ahead in {(v > rec).sum()}/{len(v)} folds; "
                  f"vs blend {v.mean() - blend.mean():+.4f}")  # fmt: skip
        gains.append(float(np.mean(aucs["blend+bgnbd"]) - blend.mean()))
    verdict = "fourth look allowed" if np.mean(gains) >= 0.005 else "no fourth look"
    print(f"blend+bgnbd - blend, mean over the splits: {np.mean(gains):+.4f} ({verdict})")


if __name__ == "__main__":
    main()
