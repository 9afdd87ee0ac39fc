"""BG/NBD's P(no purchase in (T, T + t] | x, t_x, T) against independent oracles.

The closed form (Fader & Hardie 2019, "A Step-by-Step Derivation of the BG/NBD Model", note
039, eq. 34) is ``(1 − P(alive)) + P(alive) · ((α + T)/(α + T + t))^(r + x)``. Oracles:

* numeric integration of the individual-level story over the mixing distributions
  (scipy ``quad`` of Gamma and Beta densities; no Beta/Gamma-function identities);
* a Monte Carlo simulation of the BG/NBD process with fixed parameters (the simulator of
  ``test_clv.py``), grouped by calibration history;
* the first-order link to FHL (2005) eq. 10 (``predict``, itself checked against simulation and
  matching lifetimes' ``conditional_expected_number_of_purchases_up_to_time``): as t → 0 the
  chance of a purchase and the expected number of purchases agree.

lifetimes 0.11.3 has no BG/NBD counterpart to check against (its conditional PMF exists only
for Pareto/NBD).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from avila.errors import ValidationFailed
from avila.ml.clv import BetaGeoModel
from tests.ml.test_clv import PUBLISHED_BGNBD, _simulate_bgnbd


@pytest.fixture(scope="module")
def model() -> BetaGeoModel:
    fitted = BetaGeoModel()
    fitted.params_ = dict(PUBLISHED_BGNBD)
    return fitted


def _by_integration(x: int, t_x: float, big_t: float, t: float) -> float:
    """∫∫ over λ ~ Gamma(r, α), p ~ Beta(a, b) of the individual likelihood of the history,
    split into "still alive at T" and "dropped out after the purchase at t_x", with the
    alive part times e^(−λt) for the window; the ratio of both integrals."""
    r, alpha, a, b = (PUBLISHED_BGNBD[k] for k in ("r", "alpha", "a", "b"))
    lam, p = stats.gamma(r, scale=1 / alpha), stats.beta(a, b)

    def over_lambda(end: float) -> float:
        # Split at 1: the Gamma density has an integrable spike at 0 when r < 1.
        f = lambda v: v**x * np.exp(-v * end) * lam.pdf(v)  # noqa: E731
        parts = [integrate.quad(f, lo, hi, limit=200)[0] for lo, hi in ((0, 1), (1, np.inf))]
        return float(sum(parts))

    def over_p(alive: bool) -> float:
        if alive:
            f = lambda q: (1 - q) ** x * p.pdf(q)  # noqa: E731
        else:
            f = lambda q: q * (1 - q) ** (x - 1) * p.pdf(q)  # noqa: E731
        parts = [integrate.quad(f, lo, hi, limit=200)[0] for lo, hi in ((0, 0.5), (0.5, 1))]
        return float(sum(parts))

    alive_now = over_p(True) * over_lambda(big_t)
    alive_silent = over_p(True) * over_lambda(big_t + t)
    dead = over_p(False) * over_lambda(t_x) if x > 0 else 0.0
    return (alive_silent + dead) / (alive_now + dead)


@pytest.mark.parametrize(
    ("x", "t_x", "big_t", "t"),
    [
        (0, 0.0, 39.0, 39.0),  # never repeated: alive for sure, only λ is uncertain
        (0, 0.0, 0.5, 1.0),  # brand new customer, short window
        (1, 2.0, 39.0, 39.0),  # one early repeat long ago: probably gone
        (3, 30.0, 39.0, 13.0),
        (7, 38.5, 39.0, 52.0),  # frequent and recent
        (7, 5.0, 39.0, 52.0),  # frequent but silent for 34 weeks: the frequency paradox
        (20, 39.0, 39.0, 4.0),
    ],
)
def test_closed_form_matches_integration_over_the_posterior(
    model: BetaGeoModel, x: int, t_x: float, big_t: float, t: float
) -> None:
    got = model.probability_no_purchase(t, [x], [t_x], [big_t])[0]
    assert got == pytest.approx(_by_integration(x, t_x, big_t, t), rel=1e-6, abs=1e-9)


def test_limits_no_window_and_endless_window(model: BetaGeoModel) -> None:
    x = np.array([0.0, 1.0, 4.0, 12.0])
    t_x = np.array([0.0, 3.0, 20.0, 38.0])
    big_t = np.full(4, 39.0)
    alive = model.probability_alive(x, t_x, big_t)
    assert np.all(model.probability_no_purchase(0.0, x, t_x, big_t) == pytest.approx(1.0))
    # An endless window: only the dead stay silent (slowly: (α+T)/(α+T+t) is raised to
    # r + x, and r ≈ 0.24, so t must be astronomically long for the x = 0 customer).
    endless = model.probability_no_purchase(1e40, x, t_x, big_t)
    assert endless == pytest.approx(1 - alive, abs=1e-6)
    # Longer windows can only make silence less likely.
    windows = [model.probability_no_purchase(t, x, t_x, big_t) for t in (1.0, 13.0, 39.0, 78.0)]
    assert np.all(np.diff(np.vstack(windows), axis=0) < 0)


def test_first_order_agrees_with_expected_purchases(model: BetaGeoModel) -> None:
    # For a tiny window P(≥ 1 purchase) ≈ E[purchases] (two purchases are O(h²)).
    x = np.array([0.0, 2.0, 9.0])
    t_x = np.array([0.0, 10.0, 35.0])
    big_t = np.full(3, 39.0)
    h = 1e-5
    buys = 1 - model.probability_no_purchase(h, x, t_x, big_t)
    assert buys / h == pytest.approx(model.predict(h, x, t_x, big_t) / h, rel=1e-3)


def test_matches_simulated_customers(model: BetaGeoModel) -> None:
    """Simulate the BG/NBD story with the published parameters; among customers with a given
    calibration history, the share silent in the next 39 weeks matches the prediction."""
    times, _ = _simulate_bgnbd(PUBLISHED_BGNBD, 20_000, 78.0, np.random.default_rng(11))
    calib, window = 39.0, 39.0
    x = np.array([np.sum(ts <= calib) for ts in times], dtype=float)
    t_x = np.array([ts[ts <= calib].max() if np.any(ts <= calib) else 0.0 for ts in times])
    silent = np.array([not np.any((ts > calib) & (ts <= calib + window)) for ts in times])
    predicted = model.probability_no_purchase(window, x, t_x, np.full(len(x), calib))
    # x = 0 is one history (0, 0, 39): the prediction is a single number.
    assert np.ptp(predicted[x == 0]) == 0
    groups = [x == 0, x == 1, (x >= 2) & (x <= 4), (x >= 5) & (t_x >= 30), (x >= 5) & (t_x < 30)]
    for group in groups:
        assert group.sum() >= 200
        se = np.sqrt(np.sum(predicted[group] * (1 - predicted[group])))
        assert predicted[group].sum() == pytest.approx(silent[group].sum(), abs=4 * se)
    # And it ranks: silent customers got higher predictions than returning ones.
    assert (
        stats.mannwhitneyu(predicted[silent], predicted[~silent]).statistic
        / (silent.sum() * (~silent).sum())
        > 0.6
    )


@pytest.mark.parametrize("t", [-1.0, float("nan"), float("inf")])
def test_rejects_a_bad_window(model: BetaGeoModel, t: float) -> None:
    with pytest.raises(ValidationFailed) as err:
        model.probability_no_purchase(t, [1], [2.0], [3.0])
    assert err.value.code == "clv_invalid_summary"
    assert err.value.details[0]["path"] == "t"
