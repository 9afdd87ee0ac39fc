"""An experiment's results: per-variant counts from the store, then the statistics.

Semantics (docs/experiments.md):

- The analysis window is ``[start_time, end_time)``, ``end_time`` defaulting to now. Events
  come from the project's ``events_source`` (identity-stitched ids, like every analytics query).
- **Exposed**: users with an exposure event in the window (any event when the experiment has
  no ``exposure`` condition), counted in the variant their id hashes to
  (:mod:`avila.experiments.assignment`), not in a variant an event claims. Their *first
  exposure* is their earliest exposure in the window; exposures before the start or after the
  end do not count. A tracker ``$exposure`` event names its experiment in
  ``properties.experiment``; one recorded for another experiment never exposes a user to this
  one.
- **Converted**: exposed users with a goal event at or after their first exposure (the same
  timestamp counts, as in the funnels' default ``ordered`` mode) and before the end.
- **Revenue per user** (revenue goal): the sum of the ``revenue`` of purchase events at or after
  the first exposure, over all exposed users of the variant (non-buyers count as 0).

One SQL query returns per variant the exposed and converted counts and the mean and sample
variance of the per-user value; :mod:`avila.experiments.statistics` does the rest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from avila.analytics.common import (
    Expr,
    condition_expr,
    events_source,
    iso,
    property_expr,
    utcnow,
)
from avila.experiments import statistics as st
from avila.experiments.assignment import BUCKETS, bucket_bounds, bucket_sql, variant_index_sql
from avila.experiments.models import ConversionGoal, Experiment
from avila.schemas.analytics import EventCondition
from avila.storage.base import Store

#: The tracker's exposure event: a Custom event of this name (docs/tracker.md).
EXPOSURE_EVENT = "$exposure"
#: SRM is flagged below this chi-square p-value (the threshold common in industry, e.g.
#: Microsoft's ExP and Optimizely: at 0.001 a healthy experiment is flagged 1 time in 1,000).
SRM_ALPHA = 0.001


def _exposure_expr(store: Store, experiment: Experiment) -> Expr:
    exposure = experiment.spec.exposure
    if exposure is None:
        return Expr("TRUE")
    cond = condition_expr(
        store,
        EventCondition(exposure.condition_type, exposure.condition_value, exposure.match),
        "exposure",
    )
    # The same expression as a filter on properties.experiment (each backend's own JSON read).
    other = property_expr(store, "properties.experiment", "exposure")
    return Expr(
        f"({cond.sql} AND NOT (event_type = 'custom' AND event_name = ?"
        f" AND coalesce({other.sql}, '') <> ?))",
        cond.params + (EXPOSURE_EVENT, *other.params, experiment.key),
    )


def _goal_expr(store: Store, experiment: Experiment) -> Expr:
    goal = experiment.spec.goal
    if isinstance(goal, ConversionGoal):
        return condition_expr(
            store, EventCondition(goal.condition_type, goal.condition_value, goal.match), "goal"
        )
    return Expr("(event_type = 'purchase')")


def variant_stats(
    store: Store, experiment: Experiment, end: datetime
) -> list[tuple[int, int, float, float | None]]:
    """Per variant: ``(exposed, converted, mean value, sample variance of value)``."""
    bounds = bucket_bounds(experiment.weights)
    exposure = _exposure_expr(store, experiment)
    goal = _goal_expr(store, experiment)
    bucket = bucket_sql(store, "user_id", experiment.project_id, experiment.key)
    variant = variant_index_sql("bucket", bounds)
    sql = f"""
        WITH ev AS (
            SELECT user_id, ts, {exposure.sql} AS is_exposure, {goal.sql} AS is_goal,
                   coalesce(revenue, 0) AS value, 1 AS hit
            FROM {events_source(store, experiment.project_id)}
            WHERE project_id = ? AND ts >= ? AND ts < ?
        ),
        exposed AS (
            SELECT user_id, min(ts) AS first_ts FROM ev WHERE is_exposure GROUP BY user_id
        ),
        per_user AS (
            -- hit, not count(g.ts): ClickHouse fills a LEFT JOIN's missing side with defaults
            -- (ts 1970, hit 0), not NULL, so only a summed marker tells "no goal" on both.
            SELECT x.user_id, coalesce(sum(g.hit), 0) > 0 AS converted,
                   coalesce(sum(g.value), 0) AS value
            FROM exposed x
            LEFT JOIN ev g ON g.user_id = x.user_id AND g.is_goal AND g.ts >= x.first_ts
            GROUP BY x.user_id
        ),
        bucketed AS (SELECT converted, value, {bucket.sql} AS bucket FROM per_user)
        SELECT {variant.sql} AS variant, count(*), count(*) FILTER (WHERE converted),
               avg(value), var_samp(value)
        FROM bucketed GROUP BY 1 ORDER BY 1
    """
    params = (
        exposure.params
        + goal.params
        + (experiment.project_id, experiment.start_time, end)
        + bucket.params
        + variant.params
    )
    found = {int(r[0]): r for r in store.query(sql, list(params))}
    out: list[tuple[int, int, float, float | None]] = []
    for i in range(len(bounds)):
        row = found.get(i)
        if row is None:
            out.append((0, 0, 0.0, None))
        else:
            out.append((int(row[1]), int(row[2]), float(row[3]), _float(row[4])))
    return out


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def results(store: Store, experiment: Experiment, *, now: datetime | None = None) -> dict[str, Any]:
    """The body of ``GET /api/v1/experiments/{key}/results``."""
    now = now or utcnow()
    end = (
        experiment.end_time
        if experiment.end_time is not None and experiment.end_time < now
        else now
    )
    spec = experiment.spec
    revenue_goal = not isinstance(spec.goal, ConversionGoal)
    stats = (
        variant_stats(store, experiment, end)
        if end > experiment.start_time
        else [(0, 0, 0.0, None) for _ in spec.variants]
    )
    names = experiment.variant_names
    n0, x0, mean0, var0 = stats[0]
    variants: list[dict[str, Any]] = []
    p_values: list[float] = []
    for i, (n, x, mean, var) in enumerate(stats):
        interval = st.wilson_interval(x, n)
        row: dict[str, Any] = {
            "name": names[i],
            "weight": spec.variants[i].weight,
            "exposed": n,
            "converted": x,
            "conversion_rate": x / n if n else None,
            "ci_low": interval[0] if interval else None,
            "ci_high": interval[1] if interval else None,
        }
        if revenue_goal:
            row["revenue_per_user"] = mean if n else None
            ci = st.normal_interval(mean, var, n) if n >= 2 and var is not None else None
            row["revenue_ci_low"] = ci[0] if ci else None
            row["revenue_ci_high"] = ci[1] if ci else None
        if i > 0:
            if revenue_goal:
                test = st.welch_t(n, mean, var or 0.0, n0, mean0, var0 or 0.0)
                base = mean0
                value = mean
            else:
                test = st.two_proportion_z(x, n, x0, n0)
                base = x0 / n0 if n0 else 0.0
                value = x / n if n else 0.0
            row["p_value"] = test.p_value if test else None
            row["statistic"] = test.statistic if test else None
            row["uplift"] = (value - base) / base if n and n0 and base else None
            if test:
                p_values.append(test.p_value)
        variants.append(row)

    comparisons = len(stats) - 1
    p_value = min(1.0, min(p_values) * comparisons) if p_values else None

    if revenue_goal:
        ses = [(var / n) ** 0.5 if n >= 2 and var is not None else 0.0 for n, _, _, var in stats]
        best = st.probability_best_normal([s[2] for s in stats], ses)
    else:
        best = st.probability_best_beta([s[1] for s in stats], [s[0] for s in stats])
    shares = [b / BUCKETS for b in _bucket_counts(experiment)]
    srm_p = st.srm_p_value([s[0] for s in stats], shares)
    exposed_total = sum(s[0] for s in stats)

    warnings: list[dict[str, str]] = []
    peeking = _peeking(experiment, exposed_total, now, warnings)
    srm = srm_p is not None and srm_p < SRM_ALPHA
    if srm:
        warnings.append(
            {
                "code": "sample_ratio_mismatch",
                "message": f"the exposed counts do not match the weights (chi-square p = "
                f"{srm_p:.2g} < {SRM_ALPHA}); look for a bug in exposure logging before "
                "trusting the results",
            }
        )
    return {
        "key": experiment.key,
        "name": spec.name,
        "goal": "revenue" if revenue_goal else "conversion",
        "start_time": iso(experiment.start_time),
        "end_time": iso(experiment.end_time),
        "analysed_until": iso(end),
        "variants": variants,
        "test": "welch_t" if revenue_goal else "two_proportion_z",
        "p_value": p_value,
        "alpha": spec.alpha,
        "significant": p_value is not None and p_value < spec.alpha,
        "probability_best": {
            name: (best[i] if best is not None else None) for i, name in enumerate(names)
        },
        "srm_p_value": srm_p,
        "srm": srm,
        "exposed_total": exposed_total,
        "planned_sample_size": spec.planned_sample_size,
        "peeking": peeking,
        "warnings": warnings,
    }


def _bucket_counts(experiment: Experiment) -> list[int]:
    bounds = bucket_bounds(experiment.weights)
    return [b - a for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]


def _peeking(
    experiment: Experiment, exposed: int, now: datetime, warnings: list[dict[str, str]]
) -> bool:
    """Reading results before the planned sample size (or, without one, before the planned
    end) is peeking: a p-value below alpha then is not the stated false-positive rate."""
    planned = experiment.spec.planned_sample_size
    if planned is not None:
        if exposed < planned:
            warnings.append(
                {
                    "code": "peeking",
                    "message": f"{exposed} of the planned {planned} users are exposed; stopping "
                    "now because p < alpha inflates the false-positive rate",
                }
            )
            return True
        return False
    if experiment.end_time is not None and now < experiment.end_time:
        warnings.append(
            {
                "code": "peeking",
                "message": "the experiment runs until its end_time; stopping early because "
                "p < alpha inflates the false-positive rate",
            }
        )
        return True
    if experiment.end_time is None:
        warnings.append(
            {
                "code": "no_stopping_rule",
                "message": "neither planned_sample_size nor end_time is set, so every read is "
                "a peek; fix the sample size before the test starts",
            }
        )
        return True
    return False
