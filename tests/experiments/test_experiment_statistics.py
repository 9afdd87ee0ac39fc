"""The statistics functions against statsmodels and scipy over many counts, edge cases included
(tiny and huge samples, rates of 0 and 1, empty variants). The HTTP-level oracles are in
test_experiment_results.py; these sweep the input space cheaply."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from avila.experiments import statistics as st
from avila.experiments.assignment import BUCKETS, bucket_bounds


def _counts(seed: int) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    out = [(1, 2, 1, 3), (0, 10, 1, 10), (5, 5, 4, 5), (10**6, 10**8, 10**6 + 2000, 10**8)]
    for _ in range(300):
        n1, n2 = (int(v) for v in rng.integers(1, 10 ** int(rng.integers(1, 8)), 2))
        out.append((int(rng.integers(0, n1 + 1)), n1, int(rng.integers(0, n2 + 1)), n2))
    return out


def test_z_test_and_wilson_match_statsmodels() -> None:
    checked = 0
    for x1, n1, x2, n2 in _counts(15):
        ours = st.two_proportion_z(x1, n1, x2, n2)
        pooled = (x1 + x2) / (n1 + n2)
        if pooled in (0.0, 1.0):
            assert ours is None
            continue
        z, p = proportions_ztest([x1, x2], [n1, n2])
        assert ours is not None
        assert ours.p_value == pytest.approx(p, abs=1e-9) and ours.statistic == pytest.approx(z)
        interval = st.wilson_interval(x1, n1)
        assert interval == pytest.approx(proportion_confint(x1, n1, method="wilson"), abs=1e-9)
        checked += 1
    assert checked > 250
    assert st.two_proportion_z(0, 0, 1, 5) is None and st.wilson_interval(0, 0) is None


def test_welch_matches_scipy_including_skewed_revenue() -> None:
    rng = np.random.default_rng(16)
    for size in (2, 3, 30, 1_000, 50_000):
        a = np.where(rng.random(size) < 0.1, rng.gamma(2, 30, size), 0.0)
        b = np.where(rng.random(size + 7) < 0.12, rng.gamma(2, 30, size + 7), 0.0)
        a[0], b[0] = 1e6, 3.0  # one huge order; never zero variance
        ours = st.welch_t(len(a), a.mean(), a.var(ddof=1), len(b), b.mean(), b.var(ddof=1))
        ref = stats.ttest_ind(a, b, equal_var=False)
        assert ours is not None
        assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-9)
        assert ours.statistic == pytest.approx(ref.statistic)
    assert st.welch_t(1, 1.0, 0.0, 5, 1.0, 1.0) is None
    assert st.welch_t(5, 1.0, 0.0, 5, 2.0, 0.0) is None


def test_srm_matches_scipy_chisquare() -> None:
    assert st.srm_p_value([4_500, 5_500], [0.5, 0.5]) == pytest.approx(
        stats.chisquare([4_500, 5_500]).pvalue, rel=1e-9
    )
    observed = [1_020, 1_950, 7_030]
    shares = [b / BUCKETS for b in np.diff([0, *bucket_bounds([1, 2, 7])])]
    expected = [10_000 * s for s in shares]
    assert st.srm_p_value(observed, shares) == pytest.approx(
        stats.chisquare(observed, expected).pvalue, abs=1e-12
    )
    assert st.srm_p_value([0, 0], [0.5, 0.5]) is None


@pytest.mark.parametrize(
    ("successes", "trials"),
    [
        ([0, 0], [0, 0]),
        ([3, 9], [10, 12]),
        ([480, 520], [10_000, 10_000]),
        ([5_000, 5_100, 5_050], [100_000, 100_000, 100_000]),
        ([1, 50], [10, 100_000]),
        ([30, 31, 29, 30, 32], [1_000, 1_000, 1_000, 1_000, 1_000]),
    ],
)
def test_probability_best_agrees_with_simulation(successes: list[int], trials: list[int]) -> None:
    ours = st.probability_best_beta(successes, trials)
    rng = np.random.default_rng(8)
    draws = np.stack(
        [rng.beta(1 + s, 1 + n - s, 1_000_000) for s, n in zip(successes, trials, strict=True)]
    )
    simulated = np.bincount(draws.argmax(axis=0), minlength=len(trials)) / draws.shape[1]
    assert ours == pytest.approx(list(simulated), abs=0.01)
    assert sum(ours) == pytest.approx(1.0, abs=1e-12)


def test_bucket_bounds_follow_the_weights() -> None:
    assert bucket_bounds([1, 1]) == [5_000, 10_000]
    assert bucket_bounds([1, 1, 1]) == [3_334, 6_667, 10_000]  # the remainder to the first
    assert bucket_bounds([0.1, 0.2, 0.7]) == [1_000, 3_000, 10_000]
    assert bucket_bounds([50, 50]) == bucket_bounds([1, 1])
