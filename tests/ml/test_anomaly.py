"""Anomaly detectors: river's Shuttle stream, and generated seasonal series with planted anomalies."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from river import datasets
from scipy import stats

from avila.errors import ValidationFailed
from avila.ml.anomaly import SeasonalAnomalyDetector, StreamingAnomalyDetector
from avila.ml.evaluation import roc_auc


@pytest.fixture(scope="module")
def shuttle_scores() -> tuple[np.ndarray, np.ndarray]:
    """Score-then-learn over the whole Shuttle stream (bundled in the river wheel, offline)."""
    detector = StreamingAnomalyDetector(seed=42)
    labels, scores = [], []
    for x, y in datasets.Shuttle():
        scores.append(detector.score_then_learn(x))
        labels.append(int(y))
    return np.array(labels), np.array(scores)


def test_shuttle_full_stream_auc(shuttle_scores: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = shuttle_scores
    assert len(labels) == 49_097 and labels.sum() == 3_511
    assert roc_auc(labels, scores) >= 0.95


#: river is pinned (pyproject.toml) because this figure and the data come from its release.
RIVER_VERSION = "0.26.1"
SHUTTLE_SHA256 = "1ed4bfa77233d95bff2c8ab2482725d2d800410daedf5919ad80ec6faf60ff59"


def test_shuttle_data_is_the_pinned_release() -> None:
    import hashlib

    import river

    assert river.__version__ == RIVER_VERSION
    path = Path(datasets.Shuttle().path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHUTTLE_SHA256


def test_shuttle_first_10k_reproduces_river_docs(shuttle_scores) -> None:
    """river 0.26.1 documents, in ``river.datasets.Shuttle``'s docstring, "HalfSpaceTrees
    RollingROCAUC: 90.07%" for ``preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)``
    scored then learned over ``Shuttle().take(10_000)`` with ``RollingROCAUC(window_size=10_000)``
    (a window holding every row, i.e. the plain ROC AUC). Ours is that configuration; the
    figure is read from the installed docstring, so a release that changes it fails here."""
    documented = re.search(
        r"HalfSpaceTrees RollingROCAUC: ([\d.]+)%", datasets.Shuttle.__doc__ or ""
    )
    assert documented is not None
    labels, scores = shuttle_scores
    ours = roc_auc(labels[:10_000], scores[:10_000])
    assert round(100 * ours, 2) == float(documented.group(1)) == 90.07


def test_streaming_detector_ignores_non_numeric_properties() -> None:
    plain, noisy = StreamingAnomalyDetector(seed=3), StreamingAnomalyDetector(seed=3)
    rng = np.random.default_rng(0)
    for value in rng.normal(size=300):
        plain.learn_one({"v": value})
        noisy.learn_one({"v": value, "name": "pump", "ok": True, "bad": float("nan")})
    assert plain.score_one({"v": 4.0}) == noisy.score_one({"v": 4.0, "name": "x"})


def test_streaming_detector_rejects_non_mappings() -> None:
    with pytest.raises(ValidationFailed) as info:
        StreamingAnomalyDetector().learn_one([1.0, 2.0])  # type: ignore[arg-type]
    assert info.value.code == "anomaly_invalid_reading"


# -- seasonal metric series ----------------------------------------------------------------

NOISE = 4.0


def _series(weeks: int, seed: int, n_anomalies: int) -> tuple[pd.Series, np.ndarray]:
    """Hourly metric: daily cycle (±40), weekend dip (−30), N(0, 4) noise, and anomalies of
    5–9 σ that mostly stay inside the series' overall range (invisible to a flat threshold)."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-01", periods=weeks * 168, freq="h", tz="UTC")
    hour, dow = idx.hour.to_numpy(), idx.day_of_week.to_numpy()
    values = 100 + 40 * np.sin(2 * np.pi * (hour - 6) / 24) - 30 * (dow >= 5)
    values = values + rng.normal(0, NOISE, len(idx))
    labels = np.zeros(len(idx), dtype=bool)
    where = rng.choice(len(idx), n_anomalies, replace=False)
    values[where] += rng.choice([-1, 1], n_anomalies) * rng.uniform(20, 35, n_anomalies)
    labels[where] = True
    return pd.Series(values, index=idx), labels


def _precision_recall(flags: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    hits = int((flags & labels).sum())
    return hits / max(int(flags.sum()), 1), hits / int(labels.sum())


def _slot(series: pd.Series) -> np.ndarray:
    return np.asarray(series.index.day_of_week * 24 + series.index.hour)


@pytest.mark.parametrize("seed", range(3))
def test_seasonal_detector_beats_threshold_baselines(seed: int) -> None:
    rate = 0.001
    z = stats.norm.isf(rate / 2)
    history, _ = _series(6, seed, 10)  # the history is contaminated too
    test, labels = _series(4, 100 + seed, 30)
    detector = SeasonalAnomalyDetector(false_alarm_rate=rate).fit(history)
    assert detector.threshold_ == pytest.approx(z)
    ours = _precision_recall(detector.predict(test).to_numpy(), labels)
    # Baseline 1: one flat band, mean ± z·sd of the history, same false-alarm target.
    flat = np.abs(test.to_numpy() - history.mean()) > z * history.std()
    flat_pr = _precision_recall(flat, labels)
    # Baseline 2: non-robust seasonal band, per hour-of-week mean ± z·sd.
    grouped = history.groupby(_slot(history))
    mean = grouped.mean().reindex(_slot(test)).to_numpy()
    sd = grouped.std().reindex(_slot(test)).to_numpy()
    slot_pr = _precision_recall(np.abs(test.to_numpy() - mean) > z * sd, labels)

    def f1(pr: tuple[float, float]) -> float:
        return 0.0 if sum(pr) == 0 else 2 * pr[0] * pr[1] / sum(pr)

    assert ours[0] > flat_pr[0] and ours[1] > flat_pr[1]
    assert ours[0] > slot_pr[0]
    assert f1(ours) > f1(slot_pr)


@pytest.mark.parametrize("rate", [0.001, 0.01])
def test_seasonal_false_alarms_stay_at_or_below_target(rate: float) -> None:
    history, _ = _series(6, 0, 10)
    clean, _ = _series(30, 5, 0)
    flags = SeasonalAnomalyDetector(false_alarm_rate=rate).fit(history).predict(clean)
    # Binomial upper bound: more than mean + 3 sd false alarms would miss the target.
    n = len(clean)
    assert flags.sum() <= n * rate + 3 * np.sqrt(n * rate * (1 - rate))


def test_seasonal_score_columns_and_direction() -> None:
    history, _ = _series(4, 1, 0)
    spike = history.iloc[:3].copy() + np.array([0.0, 60.0, -60.0])
    both = SeasonalAnomalyDetector().fit(history).score(spike)
    assert list(both.columns) == ["value", "expected", "lower", "upper", "z", "is_anomaly"]
    assert both["is_anomaly"].tolist() == [False, True, True]
    assert (both["lower"] < both["expected"]).all() and (both["expected"] < both["upper"]).all()
    high = SeasonalAnomalyDetector(direction="high").fit(history).predict(spike)
    assert high.tolist() == [False, True, False]


def test_seasonal_detector_needs_history_in_every_slot() -> None:
    history, _ = _series(2, 0, 0)
    with pytest.raises(ValidationFailed) as info:
        SeasonalAnomalyDetector(min_history=3).fit(history)
    assert info.value.code == "anomaly_too_little_history"
    SeasonalAnomalyDetector(season="hour_of_day", min_history=3).fit(history)


@pytest.mark.parametrize(
    "kwargs",
    [{"false_alarm_rate": 0.0}, {"season": "minute"}, {"direction": "up"}, {"min_history": 0}],
)
def test_seasonal_detector_rejects_bad_settings(kwargs) -> None:
    with pytest.raises(ValidationFailed) as info:
        SeasonalAnomalyDetector(**kwargs)
    assert info.value.code == "anomaly_invalid_settings"


def test_seasonal_detector_needs_a_datetime_index() -> None:
    with pytest.raises(ValidationFailed) as info:
        SeasonalAnomalyDetector().fit(pd.Series([1.0, 2.0, 3.0]))
    assert info.value.code == "anomaly_invalid_series"
