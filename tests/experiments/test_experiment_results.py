"""Experiment results through the HTTP API against a pandas oracle and statsmodels/scipy.

Protocol, fixed before any run: the data are ``generated_events`` with seeds 1501 (2,400
users) and the oracles' tolerances are those of issue 15: p-values and intervals to 1e-9,
the probability to be best within 0.01 of a 2,000,000-draw simulation (seed 7), counts exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from avila.testing import ServerProcess

from .experiment_data import (
    END,
    START,
    Keys,
    client,
    frame,
    generated_events,
    ingest,
    oracle_results,
)

TOL = 1e-9
RANGE = {"start_time": START.isoformat(), "end_time": END.isoformat()}
EXPOSURE = {"condition_type": "custom", "condition_value": "$exposure"}

CONVERSION = {
    "key": "checkout-button",
    "variants": [{"name": "control", "weight": 1}, {"name": "green", "weight": 1}],
    "goal": {"type": "conversion", "condition_type": "purchase", "condition_value": ""},
    "exposure": EXPOSURE,
    "planned_sample_size": 100,
    **RANGE,
}
REVENUE = {
    "key": "pricing-page",
    "variants": [{"name": "old", "weight": 1}, {"name": "new", "weight": 1}],
    "goal": {"type": "revenue"},  # exposure: any event
    **RANGE,
}
THREE_WAY = {
    "key": "checkout-button-3",
    "variants": [
        {"name": "control", "weight": 2},
        {"name": "red", "weight": 1},
        {"name": "blue", "weight": 1},
    ],
    "goal": {"type": "conversion", "condition_type": "custom", "condition_value": "signed_up"},
    "exposure": EXPOSURE,
    **RANGE,
}


@pytest.fixture(scope="module")
def loaded(exp_server: tuple[ServerProcess, Keys]) -> Iterator[tuple[httpx.Client, pd.DataFrame]]:
    server, keys = exp_server
    events = generated_events(1501, 2400, "checkout-button", "checkout-button-3")
    events += generated_events(1502, 900, "checkout-button-3", "checkout-button")
    with client(server, keys.admin) as c:
        for body in (CONVERSION, REVENUE, THREE_WAY):
            response = c.post("/api/v1/experiments", json=body)
            assert response.status_code == 201, response.text
        ingest(c, events)
        yield c, frame(events)


def results(c: httpx.Client, key: str) -> dict[str, Any]:
    response = c.get(f"/api/v1/experiments/{key}/results")
    assert response.status_code == 200, response.text
    return response.json()


def exposure_of(df: pd.DataFrame, key: str) -> pd.Series:
    return (df.type == "Custom") & (df.name == "$exposure") & (df.experiment == key)


def check_counts(body: dict[str, Any], users: pd.DataFrame) -> None:
    for i, variant in enumerate(body["variants"]):
        mine = users[users.variant == i]
        assert variant["exposed"] == len(mine), (variant["name"], variant, len(mine))
        assert variant["converted"] == int(mine.converted.sum()), variant["name"]
        assert variant["conversion_rate"] == pytest.approx(mine.converted.mean(), abs=TOL)
        low, high = proportion_confint(int(mine.converted.sum()), len(mine), method="wilson")
        assert variant["ci_low"] == pytest.approx(low, abs=TOL)
        assert variant["ci_high"] == pytest.approx(high, abs=TOL)


def simulated_best(successes: list[int], trials: list[int]) -> np.ndarray:
    rng = np.random.default_rng(7)
    draws = np.stack(
        [rng.beta(1 + s, 1 + n - s, 2_000_000) for s, n in zip(successes, trials, strict=True)]
    )
    return np.bincount(draws.argmax(axis=0), minlength=len(trials)) / draws.shape[1]


def test_conversion_counts_z_test_intervals_and_probability_best(
    loaded: tuple[httpx.Client, pd.DataFrame],
) -> None:
    c, df = loaded
    body = results(c, "checkout-button")
    users = oracle_results(
        df,
        "checkout-button",
        [1, 1],
        exposure_mask=exposure_of(df, "checkout-button"),
        goal_mask=df.type == "Purchase",
    )
    assert len(users) > 1500 and 0.1 < users.converted.mean() < 0.5  # the data are not trivial
    check_counts(body, users)
    assert body["test"] == "two_proportion_z"

    x = [int(users[users.variant == i].converted.sum()) for i in (0, 1)]
    n = [int((users.variant == i).sum()) for i in (0, 1)]
    z, p = proportions_ztest([x[1], x[0]], [n[1], n[0]])
    assert body["variants"][1]["p_value"] == pytest.approx(p, abs=TOL)
    assert body["variants"][1]["statistic"] == pytest.approx(z, abs=1e-9)
    assert body["p_value"] == pytest.approx(p, abs=TOL)
    assert body["significant"] is bool(p < 0.05)

    best = body["probability_best"]
    assert sum(best.values()) == pytest.approx(1.0, abs=1e-9)
    simulated = simulated_best(x, n)
    assert best["control"] == pytest.approx(simulated[0], abs=0.01)
    assert best["green"] == pytest.approx(simulated[1], abs=0.01)

    # Past the planned 100 users and past the end: no peeking, and an honest split.
    assert body["peeking"] is False and body["warnings"] == []
    srm = stats.chisquare(n, [sum(n) / 2, sum(n) / 2]).pvalue
    assert body["srm_p_value"] == pytest.approx(srm, abs=TOL) and body["srm"] is False


def test_three_variants_compare_each_with_the_control(
    loaded: tuple[httpx.Client, pd.DataFrame],
) -> None:
    c, df = loaded
    body = results(c, "checkout-button-3")
    users = oracle_results(
        df,
        "checkout-button-3",
        [2, 1, 1],
        exposure_mask=exposure_of(df, "checkout-button-3"),
        goal_mask=(df.type == "Custom") & (df.name == "signed_up"),
    )
    check_counts(body, users)
    x = [int(users[users.variant == i].converted.sum()) for i in range(3)]
    n = [int((users.variant == i).sum()) for i in range(3)]
    p_values = []
    for i in (1, 2):
        _, p = proportions_ztest([x[i], x[0]], [n[i], n[0]])
        assert body["variants"][i]["p_value"] == pytest.approx(p, abs=TOL)
        p_values.append(p)
    assert "p_value" not in body["variants"][0]
    assert body["p_value"] == pytest.approx(min(1.0, 2 * min(p_values)), abs=TOL)  # Bonferroni
    simulated = simulated_best(x, n)
    for i, name in enumerate(["control", "red", "blue"]):
        assert body["probability_best"][name] == pytest.approx(simulated[i], abs=0.01)
    expected = [sum(n) * 0.5, sum(n) * 0.25, sum(n) * 0.25]
    assert body["srm_p_value"] == pytest.approx(stats.chisquare(n, expected).pvalue, abs=TOL)
    # No planned sample size and the end passed: not peeking.
    assert body["peeking"] is False


def test_revenue_per_user_and_welch_t_test(loaded: tuple[httpx.Client, pd.DataFrame]) -> None:
    c, df = loaded
    body = results(c, "pricing-page")
    every_event = pd.Series(True, index=df.index)
    users = oracle_results(
        df, "pricing-page", [1, 1], exposure_mask=every_event, goal_mask=df.type == "Purchase"
    )
    check_counts(body, users)
    assert body["test"] == "welch_t"
    revenue = [users[users.variant == i].revenue.to_numpy() for i in (0, 1)]
    for i in (0, 1):
        v = body["variants"][i]
        assert v["revenue_per_user"] == pytest.approx(revenue[i].mean(), rel=1e-12)
        half = stats.norm.isf(0.025) * revenue[i].std(ddof=1) / np.sqrt(len(revenue[i]))
        assert v["revenue_ci_low"] == pytest.approx(revenue[i].mean() - half, rel=1e-9)
        assert v["revenue_ci_high"] == pytest.approx(revenue[i].mean() + half, rel=1e-9)
    welch = stats.ttest_ind(revenue[1], revenue[0], equal_var=False)
    assert body["variants"][1]["p_value"] == pytest.approx(welch.pvalue, abs=TOL)
    assert body["variants"][1]["statistic"] == pytest.approx(welch.statistic, abs=1e-9)
    assert body["p_value"] == pytest.approx(welch.pvalue, abs=TOL)

    rng = np.random.default_rng(7)
    means = np.stack(
        [rng.normal(r.mean(), r.std(ddof=1) / np.sqrt(len(r)), 2_000_000) for r in revenue]
    )
    simulated = np.bincount(means.argmax(axis=0), minlength=2) / means.shape[1]
    assert body["probability_best"]["old"] == pytest.approx(simulated[0], abs=0.01)
    assert body["probability_best"]["new"] == pytest.approx(simulated[1], abs=0.01)
    # No planned sample size, the end passed: the stopping rule was the end time.
    assert body["peeking"] is False
