"""Predictive maintenance on simulated run-to-failure data with a known degradation law."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from avila.errors import ValidationFailed
from avila.industry40.maintenance import (
    estimate_rul,
    phm08_score,
    predict_maintenance,
    reliability_metrics,
    risk_level,
)

THRESHOLD = 10.0


def simulate_unit(rng: np.random.Generator, law: str) -> tuple[float, np.ndarray, np.ndarray]:
    """(true life in hours, hourly readings up to a random cut, values) for one unit.

    exponential: y = a·e^(b·t)·e^ε, ε ~ N(0, 0.05); linear: y = a + b·t + N(0, 0.25)."""
    if law == "exponential":
        a, b = rng.uniform(0.5, 1.5), rng.uniform(0.005, 0.02)
        life = math.log(THRESHOLD / a) / b
    else:
        a, b = rng.uniform(0.5, 2.0), rng.uniform(0.02, 0.08)
        life = (THRESHOLD - a) / b
    cut = rng.uniform(0.4, 0.9) * life
    t = np.arange(0.0, cut, 1.0)
    if law == "exponential":
        y = a * np.exp(b * t) * np.exp(rng.normal(0, 0.05, t.size))
    else:
        y = a + b * t + rng.normal(0, 0.25, t.size)
    return life, t, y


def test_rul_beats_mean_life_baseline(record_property):
    rng = np.random.default_rng(2024)
    train_lives = [simulate_unit(rng, law)[0] for law in ["exponential", "linear"] * 50]
    mean_life = float(np.mean(train_lives))
    truth, ours, naive = [], [], []
    for law in ["exponential", "linear"] * 20:
        life, t, y = simulate_unit(rng, law)
        age = t[-1]
        truth.append(life - age)
        ours.append(estimate_rul(t, y, THRESHOLD, direction="increasing")["rul_hours"])
        naive.append(max(mean_life - age, 0.0))
    truth_a = np.array(truth)
    rmse = float(np.sqrt(np.mean((np.array(ours) - truth_a) ** 2)))
    rmse_naive = float(np.sqrt(np.mean((np.array(naive) - truth_a) ** 2)))
    record_property("rul_rmse_hours", rmse)
    record_property("rul_rmse_mean_life_baseline_hours", rmse_naive)
    assert rmse < 0.25 * rmse_naive
    assert phm08_score(ours, truth) < phm08_score(naive, truth)


def test_interval_contains_point_and_probability_rises_near_failure():
    rng = np.random.default_rng(0)
    t = np.arange(0.0, 100.0)
    y = 1 + 0.05 * t + rng.normal(0, 0.1, t.size)  # reaches 10 at t = 180 → RUL ≈ 81 h
    r = estimate_rul(t, y, THRESHOLD, horizon_hours=168)
    lo, hi = r["rul_interval_hours"]
    assert r["model"] in {"linear", "quadratic"}
    assert lo <= r["rul_hours"] <= hi
    assert r["rul_hours"] == pytest.approx(81, abs=8)
    assert r["failure_probability"] == 1.0  # within a week whatever the trend estimate
    assert estimate_rul(t, y, THRESHOLD, horizon_hours=24)["failure_probability"] == 0.0
    assert r["trend_per_hour"] == pytest.approx(0.05, abs=0.01)
    assert 0.4 < r["progress"] < 0.6


def test_decreasing_metric_and_flat_metric():
    t = np.arange(0.0, 50.0)
    falling = 100 - 0.5 * t  # reaches 60 at t = 80 → RUL 31 h
    r = estimate_rul(t, falling, 60.0)
    assert r["direction"] == "decreasing" and r["rul_hours"] == pytest.approx(31, abs=0.5)
    flat = estimate_rul(t, np.full(t.size, 5.0) + np.sin(t) * 0.01, THRESHOLD, horizon_hours=100)
    assert flat["rul_censored"] and flat["failure_probability"] == 0.0
    assert flat["rul_hours"] == pytest.approx(490.0)  # the cap: 10 × observed span (49 h)


def _history(values, start=datetime(2025, 1, 1, tzinfo=UTC), threshold=None):
    stamps = [start + timedelta(hours=i) for i in range(len(values))]
    h = {"timestamps": stamps, "values": list(values)}
    if threshold is not None:
        h["failure_threshold"] = threshold
    return h


def test_predict_maintenance_device():
    rng = np.random.default_rng(1)
    t = np.arange(200.0)
    req = {
        "device_id": "pump_7",
        "metrics": {
            "vibration": _history(2 + 0.04 * t + rng.normal(0, 0.05, t.size), threshold=11),
            "temperature": _history(60 + rng.normal(0, 0.5, t.size), threshold=95),
            "pressure": _history([1.0, 2.0]),  # too short
        },
    }
    r = predict_maintenance(req)
    assert r["device_id"] == "pump_7"
    assert r["contributing_metrics"][0]["metric"] == "vibration"
    assert r["rul_hours"] == pytest.approx(26, abs=5)  # 11 reached at t = 225
    # true RUL 26 h: the "high" band (24-72 h); sure to fail within the 168 h horizon, which
    # made it "critical" before the bands got their own windows
    assert r["risk_level"] == "high"
    assert r["failure_probability"] > 0.8
    assert r["skipped_metrics"] == ["pressure"]
    assert "vibration" in r["recommendation"]
    lo, hi = r["rul_interval_hours"]
    assert lo <= r["rul_hours"] <= hi
    assert "temperature" not in [m["metric"] for m in r["contributing_metrics"]]


def test_already_failed_and_inferred_threshold():
    r = predict_maintenance(
        {"device_id": "d", "metrics": {"wear": _history([1, 2, 3, 9, 12, 12, 13], threshold=10)}}
    )
    assert r["rul_hours"] == 0.0 and r["risk_level"] == "critical"
    rng = np.random.default_rng(4)
    drift = np.concatenate([rng.normal(5, 0.1, 50), 5 + 0.02 * np.arange(100)])
    r = predict_maintenance({"device_id": "d", "metrics": {"temp": _history(drift)}})
    m = r["contributing_metrics"][0]
    assert m["threshold_source"] == "inferred" and m["direction"] == "increasing"
    assert m["failure_threshold"] > 5.3


def test_no_data_is_low_risk_with_null_rul():
    r = predict_maintenance({"device_id": "d"})
    assert r["rul_hours"] is None and r["risk_level"] == "low" and r["failure_probability"] == 0.0


def test_length_mismatch_is_rejected():
    with pytest.raises(ValidationFailed) as exc:
        predict_maintenance(
            {"device_id": "d", "metrics": {"x": {"timestamps": [0.0, 1.0], "values": [1.0]}}}
        )
    assert exc.value.code == "maintenance_length_mismatch"
    assert exc.value.details[0]["path"] == "$.metrics.x"


@pytest.mark.parametrize(
    ("p", "rul", "level"),
    [
        (0.9, 500, "medium"),  # likely within the horizon, not within 72 h
        (0.1, 10, "critical"),
        (0.6, 500, "medium"),
        (0.1, 60, "high"),
        (0.3, 500, "medium"),
        (0.0, 100, "medium"),
        (0.0, 500, "low"),
        (0.0, None, "low"),
    ],
)
def test_risk_levels(p, rul, level):
    assert risk_level(p, rul, horizon_hours=168) == level


def test_phm08_score_formula():
    assert phm08_score([0, 10, 5], [13, 0, 5]) == pytest.approx((math.e - 1) * 2)


def test_mtbf_mttr():
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    events = [
        {"failed_at": t0 + timedelta(hours=50), "restored_at": t0 + timedelta(hours=54)},
        {"failed_at": t0 + timedelta(hours=10), "restored_at": t0 + timedelta(hours=12)},
    ]
    r = reliability_metrics(events, observed_from=t0, observed_to=t0 + timedelta(hours=100))
    assert r["failures"] == 2 and r["downtime_hours"] == 6 and r["uptime_hours"] == 94
    assert r["mtbf_hours"] == 47 and r["mttr_hours"] == 3
    assert r["inherent_availability"] == pytest.approx(47 / 50)
    none = reliability_metrics([], observed_from=t0, observed_to=t0 + timedelta(hours=1))
    assert none["mtbf_hours"] is None and none["failures"] == 0
    with pytest.raises(ValidationFailed) as exc:
        reliability_metrics(
            [
                events[0],
                {"failed_at": t0 + timedelta(hours=52), "restored_at": t0 + timedelta(hours=60)},
            ],
            observed_from=t0,
            observed_to=t0 + timedelta(hours=100),
        )
    assert exc.value.code == "reliability_overlapping_repairs"


# --- robustness: a law outside the fitted family, a threshold learned from the fleet ---------

ROBUST_SEEDS = range(5)
ROBUST_RATIO = 0.5  # our RUL RMSE must be at most half the mean-life baseline's, every seed


def simulate_off_family(
    rng: np.random.Generator, law: str
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(life h, failure value, hourly times, values) for a unit whose law is in none of the
    fitted families (linear, quadratic, exponential):

    * ``power``: y = 1 + c·t^p, p ~ U(2.5, 4) — accelerating faster than a quadratic;
    * ``knee``: flat at 1 until an onset (20–50 % of life), then 1 + c·(t − onset)^1.5.

    Each unit fails at its own threshold ~ U(9, 11); noise N(0, 0.15)."""
    fail_at = rng.uniform(9.0, 11.0)
    life = rng.uniform(150.0, 400.0)
    if law == "power":
        p = rng.uniform(2.5, 4.0)
        c = (fail_at - 1.0) / life**p

        def level(t: np.ndarray) -> np.ndarray:
            return 1.0 + c * t**p
    else:
        onset = rng.uniform(0.2, 0.5) * life
        c = (fail_at - 1.0) / (life - onset) ** 1.5

        def level(t: np.ndarray) -> np.ndarray:
            return 1.0 + c * np.clip(t - onset, 0.0, None) ** 1.5

    cut = rng.uniform(0.6, 0.9) * life
    t = np.arange(0.0, cut, 1.0)
    return life, fail_at, t, level(t) + rng.normal(0.0, 0.15, t.size)


def _off_family_rmse(seed: int) -> tuple[float, float, float, float]:
    """(our RMSE, baseline RMSE, our PHM08, baseline PHM08) for one seed of the protocol."""
    rng = np.random.default_rng(1000 + seed)
    laws = ["power", "knee"]
    train = [simulate_off_family(rng, law) for law in laws * 30]
    mean_life = float(np.mean([u[0] for u in train]))
    threshold = float(np.median([u[1] for u in train]))
    truth, ours, naive = [], [], []
    for law in laws * 20:
        life, _, t, y = simulate_off_family(rng, law)
        truth.append(life - t[-1])
        ours.append(estimate_rul(t, y, threshold, direction="increasing")["rul_hours"])
        naive.append(max(mean_life - t[-1], 0.0))
    truth_a = np.array(truth)
    rmse = float(np.sqrt(np.mean((np.array(ours) - truth_a) ** 2)))
    rmse_naive = float(np.sqrt(np.mean((np.array(naive) - truth_a) ** 2)))
    return rmse, rmse_naive, phm08_score(ours, truth), phm08_score(naive, truth)


#: First run (2026-11-30), RUL RMSE ours / mean-life baseline (hours) for seeds 0–4:
#: 42.2/67.7, 116.4/67.4, 39.9/65.1, 30.7/69.9, 42.8/69.8 — better than the baseline in four
#: seeds, but by the stated margin (≤ 0.5×) only in one, and worse in seed 1 (trend
#: extrapolation of the knee law); recorded then as a strict expected failure.
#: Second run (2026-11-30 evening), after RUL fits the trends from the detected degradation
#: onset and takes the earliest crossing of the plausible trends (developed on seeds 100–109
#: of this simulator, where it gave 0.19–0.43× the baseline's RMSE and a lower PHM08 in all
#: ten; the onset-only variant was looked at once on seeds 0–4 before that): 17.9/67.7,
#: 17.7/67.4, 21.0/65.1, 13.2/69.9, 14.4/69.8 — 0.19–0.32×, every seed.
def test_rul_off_family_with_inferred_threshold_beats_mean_life() -> None:
    """Protocol (fixed before the first run, 2026-11-30): per seed, 60 training units run to
    failure give the mean life (the baseline) and the failure threshold, inferred as the
    median value at failure (the true per-unit thresholds are never passed in). 40 test units
    (half ``power``, half ``knee``) are cut at 60–90 % of their life; our RUL uses the
    inferred threshold. Pass: RUL RMSE ≤ 0.5 × the baseline's (mean life − age, at least 0)
    and a lower PHM08 score, in every one of 5 seeds."""
    for seed in ROBUST_SEEDS:
        rmse, rmse_naive, score, score_naive = _off_family_rmse(seed)
        print(f"seed {seed}: RUL RMSE ours {rmse:.1f} h, mean-life {rmse_naive:.1f} h")
        assert rmse <= ROBUST_RATIO * rmse_naive, seed
        assert score < score_naive, seed
