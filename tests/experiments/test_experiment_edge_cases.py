"""Edge cases of the assignment split and of the probability to be best, against exact oracles.

- Bucket bounds: the documented rule (docs/experiments.md: ``floor(10000 * w_i / sum w)``
  buckets each, the rest to the largest fractional remainders, earlier variants first on
  ties) computed in integer arithmetic for integer weights, and by hand for decimal weights.
- Probability to be best of two variants: the closed forms. Beta posteriors with an integer
  first parameter: Evan Miller's sum, "Formulas for Bayesian A/B Testing" (2015),
  ``P(p_B > p_A) = sum_{i=0}^{a_B-1} B(a_A+i, b_A+b_B) / ((b_B+i) B(1+i, b_B) B(a_A, b_A))``.
  Normal posteriors: ``P(m_B > m_A) = Phi((mu_B - mu_A) / sqrt(se_A^2 + se_B^2))``.
  The documentation promises "exact to about 1e-8".
"""

from __future__ import annotations

import math
import random
import warnings

import pytest
from scipy import special, stats

from avila.experiments import statistics as st
from avila.experiments.assignment import BUCKETS, bucket_bounds


def _integer_bounds(weights: list[int]) -> list[int]:
    """The documented largest-remainder rule, in exact integer arithmetic."""
    total = sum(weights)
    parts = [divmod(BUCKETS * w, total) for w in weights]  # (floor, remainder * total)
    counts = [q for q, _ in parts]
    left = BUCKETS - sum(counts)
    # Largest remainder first; on a tie the earlier variant (a stable sort keeps index order).
    order = sorted(range(len(weights)), key=lambda i: -parts[i][1])
    for i in order[:left]:
        counts[i] += 1
    bounds, running = [], 0
    for count in counts:
        running += count
        bounds.append(running)
    return bounds


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        # 58:1:1 -> 9666.67, 166.67, 166.67: three equal remainders, two buckets left over,
        # so variants 0 and 1 get one each: 9667, 167, 166.
        ([58, 1, 1], [9_667, 9_834, 10_000]),
        # 0.4:1:1 -> 1666.67, 4166.67, 4166.67: ties again, variants 0 and 1 get the two left.
        ([0.4, 1, 1], [1_667, 5_834, 10_000]),
        ([1, 1, 0.4], [4_167, 8_334, 10_000]),
        ([1, 1, 1], [3_334, 6_667, 10_000]),
        ([0.1, 0.2, 0.7], [1_000, 3_000, 10_000]),
    ],
)
def test_bucket_bounds_break_ties_towards_the_earlier_variant(
    weights: list[float], expected: list[int]
) -> None:
    assert bucket_bounds(weights) == expected


def test_bucket_bounds_match_the_documented_rule_for_integer_weights() -> None:
    rng = random.Random(20)
    cases = [[58, 1, 1], [40, 78, 1, 1], [38, 1, 5], [1, 1, 19, 54], [3, 3, 3, 3, 3, 3, 3]]
    for _ in range(3_000):
        cases.append(
            [rng.randint(1, rng.choice([3, 10, 100, 1_000])) for _ in range(rng.randint(2, 8))]
        )
    wrong = []
    for weights in cases:
        if any(BUCKETS * w < sum(weights) for w in weights):
            continue  # a variant without a bucket is refused (weight_too_small)
        if bucket_bounds(weights) != _integer_bounds(weights):
            wrong.append(weights)
    assert wrong == []


def _beta_best_exact(s_a: int, n_a: int, s_b: int, n_b: int) -> float:
    """P(rate_B > rate_A), posteriors Beta(1 + s, 1 + n - s) (Evan Miller's closed form)."""
    a_a, b_a, a_b, b_b = 1 + s_a, 1 + n_a - s_a, 1 + s_b, 1 + n_b - s_b
    logs = [
        special.betaln(a_a + i, b_a + b_b)
        - math.log(b_b + i)
        - special.betaln(1 + i, b_b)
        - special.betaln(a_a, b_a)
        for i in range(a_b)
    ]
    top = max(logs)
    return math.exp(top) * math.fsum(math.exp(v - top) for v in logs)


@pytest.mark.parametrize(
    ("successes", "trials"),
    [
        ([100_000, 0], [100_000, 0]),  # a perfect control against an empty variant
        ([100_000, 5], [100_000, 5]),  # 100 % against 100 % of a tiny sample
        ([100_000, 100], [100_000, 100]),
        ([0, 0], [10**6, 10]),
        ([0, 3], [5_000, 3]),
        ([500, 520], [10_000, 10_000]),
        ([0, 1], [1, 1]),
        ([3, 2], [7, 11]),
    ],
)
def test_probability_best_beta_matches_the_closed_form(
    successes: list[int], trials: list[int]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no IntegrationWarning either
        ours = st.probability_best_beta(successes, trials)
    exact = _beta_best_exact(successes[0], trials[0], successes[1], trials[1])
    assert ours[1] == pytest.approx(exact, abs=1e-8)
    assert ours[0] == pytest.approx(1 - exact, abs=1e-8)


@pytest.mark.parametrize(
    ("means", "ses"),
    [
        ([1.4911151560719018, 0.8702586799238219], [0.0024999687246253844, 1.8477060675805685]),
        ([1.2821719309093629, 1.2562526780948202], [2.5427833800257604e-05, 0.11079560363384754]),
        ([-1.4375434767511108, -1.7048202330578], [0.0004843686035752377, 0.5036302305523483]),
        ([12.0, 12.5], [0.01, 20.0]),  # a large variant against a small, noisy one
        ([12.0, 12.5], [20.0, 0.01]),
        ([3.0, 3.0], [1.0, 1.0]),
    ],
)
def test_probability_best_normal_matches_the_closed_form(
    means: list[float], ses: list[float]
) -> None:
    ours = st.probability_best_normal(means, ses)
    assert ours is not None
    exact = float(stats.norm.sf(0.0, loc=means[1] - means[0], scale=math.hypot(*ses)))
    assert ours[1] == pytest.approx(exact, abs=1e-8)


def test_probability_best_sweep_against_the_closed_forms() -> None:
    rng = random.Random(21)
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(150):
            n_a = rng.choice([0, 1, 2, 10, 100, 10_000, 10**6])
            n_b = rng.choice([0, 1, 2, 10, 100, 1_000])
            s_a = rng.choice([0, n_a, rng.randint(0, n_a)])
            s_b = rng.choice([0, n_b, rng.randint(0, n_b)])
            ours = st.probability_best_beta([s_a, s_b], [n_a, n_b])
            worst = max(worst, abs(ours[1] - _beta_best_exact(s_a, n_a, s_b, n_b)))
        for _ in range(150):
            means = [rng.uniform(-5, 5), rng.uniform(-5, 5)]
            ses = [10 ** rng.uniform(-6, 3), 10 ** rng.uniform(-6, 3)]
            normal = st.probability_best_normal(means, ses)
            assert normal is not None
            exact = float(stats.norm.sf(0.0, loc=means[1] - means[0], scale=math.hypot(*ses)))
            worst = max(worst, abs(normal[1] - exact))
    assert worst < 1e-8
