"""avila train: train every model of a project from the store and print the evaluation report.

The server holds the DuckDB file while it runs; train a running server's project with
``POST /api/v1/ml/train`` instead. A server started later loads the newest run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from avila.config import Settings


def _line(name: str, m: dict[str, Any]) -> str:
    base = m.get("baseline", {})
    if "roc_auc" in m:
        return (
            f"{name:<19} ROC AUC {m['roc_auc']:.3f} (baseline {base.get('roc_auc', float('nan')):.3f})"
            f"  Brier {m['brier']:.4f} (baseline {base.get('brier', float('nan')):.4f},"
            f" base rate {m['brier_base_rate']:.4f})  PR AUC {m['pr_auc']:.3f}"
            f" (base rate {m['base_rate']:.3f})  n={int(m['n'])}"
        )
    if "precision@10" in m:
        return (
            f"{name:<19} P@10 {m['precision@10']:.3f} (popularity {base.get('precision@10', 0):.3f})"
            f"  NDCG@10 {m['ndcg@10']:.3f} (popularity {base.get('ndcg@10', 0):.3f})"
            f"  users={int(m['users'])}"
        )
    if "holdout_mae" in m:
        return (
            f"{name:<19} holdout MAE {m['holdout_mae']:.3f} purchases/user "
            f"(past-rate baseline {base.get('holdout_mae', float('nan')):.3f}); "
            f"predicted {m['holdout_predicted_total']:.0f} vs actual {m['holdout_actual_total']:.0f}"
        )
    return f"{name:<19} {json.dumps(m, default=str)[:200]}"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from avila.ml.monitoring import AnomalyLog
    from avila.ml.training import TrainingOptions, train_project
    from avila.shared import open_model_registry
    from avila.storage import open_store

    settings = Settings.from_env()
    settings.ensure_directories()
    store = open_store(settings.storage_url, lock_wait=1.0)
    stages = 11
    try:
        with tqdm(total=stages, desc="train", unit="step", file=sys.stderr) as bar:

            def progress(stage: str) -> None:
                bar.set_postfix_str(stage)
                bar.update(1)

            artifact, meta = train_project(
                store,
                args.project,
                TrainingOptions(
                    churn_horizon_days=args.churn_horizon_days,
                    conversion_horizon_days=args.conversion_horizon_days,
                ),
                progress,
            )
            bar.update(stages - bar.n)
        meta = open_model_registry(settings).save(args.project, artifact, meta)
        new = AnomalyLog(store).add(args.project, artifact.anomalies)
    finally:
        store.close()
    window = meta["training_window"]
    print(f"model version v{meta['version']} for project {args.project}")
    print(f"training window {window['start']} .. {window['end']}, {meta['users_scored']} users")
    for name, entry in meta["models"].items():
        print(_line(name, entry["metrics"]))
    a = meta["anomalies"]
    print(
        f"{'anomalies':<19} {a['seasonal_found']} seasonal, {a['streaming_found']} streaming "
        f"({len(new)} new)"
    )
    if args.json:
        print(json.dumps(meta, indent=1, default=str))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmd = sub.add_parser("train", help="train the ML models and print their evaluation")
    cmd.add_argument("--project", default="default", help="project to train (default: default)")
    cmd.add_argument("--churn-horizon-days", type=int, help="churn label window (default auto)")
    cmd.add_argument(
        "--conversion-horizon-days", type=int, help="conversion label window (default auto)"
    )
    cmd.add_argument("--json", action="store_true", help="also print the run's metadata as JSON")
    cmd.set_defaults(func=run)
