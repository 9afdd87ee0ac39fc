"""BG/NBD and Gamma-Gamma against the published CDNOW fits and against simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avila.errors import AvilaError, ValidationFailed
from avila.ml.clv import (
    BetaGeoModel,
    GammaGammaModel,
    customer_lifetime_value,
    summarise_transactions,
)

# Fader, Hardie & Lee (2005), CDNOW, 2,357 customers, 39-week calibration, weeks.
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_BGNBD_LL = -9582.4
# Fader & Hardie Gamma-Gamma on the 946 repeat buyers.
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def bgnbd(cdnow_summary: pd.DataFrame) -> BetaGeoModel:
    return BetaGeoModel().fit(cdnow_summary["x"], cdnow_summary["t_x"], cdnow_summary["T"])


def test_cdnow_has_the_published_shape(cdnow_summary: pd.DataFrame) -> None:
    assert len(cdnow_summary) == 2357
    assert int((cdnow_summary["x"] > 0).sum()) == 946


def test_bgnbd_reproduces_published_cdnow_fit(bgnbd: BetaGeoModel) -> None:
    assert bgnbd.params_ is not None
    for name, published in PUBLISHED_BGNBD.items():
        assert bgnbd.params_[name] == pytest.approx(published, rel=0.01), name
    # The paper's LL is the sum of the per-customer log-likelihoods.
    assert bgnbd.log_likelihood_ == pytest.approx(PUBLISHED_BGNBD_LL, abs=0.1)
    assert bgnbd.n_customers_ == 2357


def test_gamma_gamma_reproduces_published_cdnow_fit(cdnow_summary: pd.DataFrame) -> None:
    model = GammaGammaModel().fit(cdnow_summary["x"], cdnow_summary["zbar"])
    assert model.n_customers_ == 946
    assert model.params_ is not None
    for name, published in PUBLISHED_GG.items():
        assert model.params_[name] == pytest.approx(published, rel=0.01), name


def _simulate_bgnbd(
    params: dict[str, float], n: int, horizon: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    """Draw the BG/NBD story directly: first purchase at 0, Exp(λ) gaps, drop-out w.p. p
    after each repeat purchase. Returns each customer's repeat purchase times and the time
    of the purchase after which they dropped out (inf if still active at ``horizon``)."""
    lam = rng.gamma(params["r"], 1.0 / params["alpha"], n)
    p = rng.beta(params["a"], params["b"], n)
    times: list[list[float]] = [[] for _ in range(n)]
    death = np.full(n, np.inf)
    clock = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        clock[idx] += rng.exponential(1.0 / lam[idx])
        in_window = clock[idx] <= horizon
        for i in idx[in_window]:
            times[i].append(clock[i])
        dies = (rng.random(len(idx)) < p[idx]) & in_window
        death[idx[dies]] = clock[idx[dies]]
        active[idx[~in_window | dies]] = False
    return [np.array(t) for t in times], death


@pytest.fixture(scope="module")
def simulated() -> tuple[list[np.ndarray], np.ndarray]:
    return _simulate_bgnbd(PUBLISHED_BGNBD, 20_000, 78.0, np.random.default_rng(7))


def test_unconditional_expectation_matches_simulation(
    bgnbd: BetaGeoModel, simulated: tuple[list[np.ndarray], np.ndarray]
) -> None:
    model = BetaGeoModel()
    model.params_ = dict(PUBLISHED_BGNBD)
    times, _ = simulated
    for t in (13.0, 39.0, 78.0):
        counts = np.array([np.sum(ts <= t) for ts in times])
        se = counts.std(ddof=1) / np.sqrt(len(counts))
        assert model.expected_purchases(t) == pytest.approx(counts.mean(), abs=4 * se)


def test_conditional_expectation_and_p_alive_match_simulation(
    simulated: tuple[list[np.ndarray], np.ndarray],
) -> None:
    model = BetaGeoModel()
    model.params_ = dict(PUBLISHED_BGNBD)
    times, _ = simulated
    calib, t_future = 39.0, 39.0
    x = np.array([np.sum(ts <= calib) for ts in times], dtype=float)
    t_x = np.array([ts[ts <= calib].max() if np.any(ts <= calib) else 0.0 for ts in times])
    big_t = np.full(len(times), calib)
    future = np.array([np.sum((ts > calib) & (ts <= calib + t_future)) for ts in times])
    predicted = model.predict(t_future, x, t_x, big_t)
    # Totals over the base, and within the heavy-buyer group where the conditioning matters.
    for group in (np.ones(len(x), dtype=bool), x >= 3):
        se = future[group].std(ddof=1) * np.sqrt(group.sum())
        assert predicted[group].sum() == pytest.approx(future[group].sum(), abs=4 * se)
    # P(alive) is calibrated against who really was still active at the end of calibration.
    _, death = simulated
    truly_alive = death > calib
    alive = model.probability_alive(x, t_x, big_t)
    assert np.all(alive[x == 0] == 1.0) and np.all(truly_alive[x == 0])
    for group in (x == 1, (x >= 2) & (x <= 4), x >= 5):
        se = np.sqrt(np.sum(alive[group] * (1 - alive[group])))
        assert alive[group].sum() == pytest.approx(truly_alive[group].sum(), abs=4 * se)


def test_conditional_expectation_for_a_new_customer_equals_unconditional(
    bgnbd: BetaGeoModel,
) -> None:
    # A customer observed for T → 0 with no purchases is a new customer: eq. 10 → eq. 9.
    assert bgnbd.predict(39.0, [0], [0.0], [1e-9])[0] == pytest.approx(
        float(bgnbd.expected_purchases(39.0)), rel=1e-6
    )


def test_fit_recovers_parameters_from_simulated_data(
    simulated: tuple[list[np.ndarray], np.ndarray],
) -> None:
    times, _ = simulated
    calib = 39.0
    x = np.array([np.sum(ts <= calib) for ts in times], dtype=float)
    t_x = np.array([ts[ts <= calib].max() if np.any(ts <= calib) else 0.0 for ts in times])
    model = BetaGeoModel().fit(x, t_x, np.full(len(x), calib))
    truth = BetaGeoModel()
    truth.params_ = dict(PUBLISHED_BGNBD)
    # The MLE fits the data at least as well as the generating parameters.
    assert model.log_likelihood_ >= truth.log_likelihood(x, t_x, np.full(len(x), calib)).sum()
    assert model.params_ is not None
    assert model.params_["r"] == pytest.approx(PUBLISHED_BGNBD["r"], rel=0.15)


def test_clv_sums_discounted_increments(cdnow_summary: pd.DataFrame, bgnbd: BetaGeoModel) -> None:
    spend = GammaGammaModel().fit(cdnow_summary["x"], cdnow_summary["zbar"])
    head = cdnow_summary.head(50)
    args = (head["x"], head["t_x"], head["T"], head["zbar"])
    undiscounted = customer_lifetime_value(
        bgnbd, spend, *args, periods=12, period_length=4.35, discount_rate=0.0
    )
    expected = spend.predict(head["x"], head["zbar"]) * bgnbd.predict(
        12 * 4.35, head["x"], head["t_x"], head["T"]
    )
    np.testing.assert_allclose(undiscounted, expected, rtol=1e-10)
    discounted = customer_lifetime_value(
        bgnbd, spend, *args, periods=12, period_length=4.35, discount_rate=0.01
    )
    assert np.all(discounted < undiscounted) and np.all(discounted > 0)


def test_gamma_gamma_prediction_shrinks_towards_population_mean(
    cdnow_summary: pd.DataFrame,
) -> None:
    model = GammaGammaModel().fit(cdnow_summary["x"], cdnow_summary["zbar"])
    p, q, v = (model.params_[k] for k in ("p", "q", "gamma"))  # type: ignore[index]
    population = p * v / (q - 1)
    assert model.predict([0], [0.0])[0] == pytest.approx(population)
    few, many = model.predict([1, 50], [100.0, 100.0])
    assert population < few < many < 100.0


def test_summarise_transactions_counts_repeat_days() -> None:
    log = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b", "c", "b"],
            "timestamp": [
                "2024-01-01T09:00Z",
                "2024-01-01T17:00Z",  # same day: one purchase
                "2024-01-08T10:00Z",
                "2024-01-22T10:00Z",
                "2024-01-15T00:00Z",
                "2024-02-01T00:00Z",
                "2024-01-29T07:00Z",  # after the observation end, same day
            ],
            "value": [10.0, 5.0, 20.0, 40.0, 7.0, 1.0, 99.0],
        }
    )
    out = summarise_transactions(log, observation_end="2024-01-29T06:00Z")
    assert out.loc["a"].tolist() == [2.0, 3.0, 4.0, 30.0]
    assert out.loc["b"].tolist() == [0.0, 0.0, 2.0, 0.0]
    assert "c" not in out.index  # after the observation end


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "code"),
    [
        ([1.0] * 30, [5.0] * 30, [4.0] * 30, "clv_invalid_summary"),  # recency > T
        ([0.0] * 30, [1.0] * 30, [4.0] * 30, "clv_invalid_summary"),  # x = 0 but t_x > 0
        ([-1.0] * 30, [0.0] * 30, [4.0] * 30, "clv_invalid_summary"),
        ([1.5] * 30, [1.0] * 30, [4.0] * 30, "clv_invalid_summary"),
        ([1.0, float("nan")] * 15, [1.0] * 30, [4.0] * 30, "clv_invalid_summary"),
        ([1.0] * 30, [1.0] * 29, [4.0] * 30, "clv_invalid_summary"),
        ([1.0] * 5, [1.0] * 5, [4.0] * 5, "clv_too_few_customers"),
        ([0.0] * 30, [0.0] * 30, [4.0] * 30, "clv_too_few_customers"),
    ],
)
def test_bgnbd_rejects_bad_input(frequency, recency, T, code) -> None:  # noqa: N803
    with pytest.raises(ValidationFailed) as info:
        BetaGeoModel().fit(frequency, recency, T)
    assert info.value.code == code
    assert info.value.status == 422
    assert all({"path", "message"} <= set(d) for d in info.value.details)


def test_gamma_gamma_needs_repeat_buyers() -> None:
    with pytest.raises(ValidationFailed) as info:
        GammaGammaModel().fit([0, 0, 1], [0.0, 0.0, 5.0])
    assert info.value.code == "clv_too_few_repeat_buyers"


def test_unfitted_model_says_so() -> None:
    with pytest.raises(AvilaError) as info:
        BetaGeoModel().expected_purchases(1.0)
    assert info.value.code == "model_not_fitted"
