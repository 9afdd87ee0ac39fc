"""Rolling robust z-score anomaly detection against a pandas oracle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from avila.errors import ValidationFailed
from avila.industry40.anomaly import FLAT_SCORE, detect_anomalies, robust_zscores


def test_scores_match_pandas_rolling_oracle():
    x = np.random.default_rng(0).normal(20, 2, 300)
    scores, _, _ = robust_zscores(x, window=25)
    s = pd.Series(x)
    med = s.rolling(25).median().shift(1)
    mad = s.rolling(25).apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True).shift(1)
    oracle = 0.6745 * (s - med) / mad
    np.testing.assert_allclose(scores[25:], oracle.to_numpy()[25:], rtol=1e-12)
    assert np.isnan(scores[:25]).all()


def test_injected_spikes_are_found_with_timestamps():
    rng = np.random.default_rng(1)
    x = rng.normal(50, 1, 400)
    spikes = [100, 250, 333]
    x[spikes] += [12, -10, 9]
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    stamps = [t0 + timedelta(seconds=10 * i) for i in range(x.size)]
    r = detect_anomalies({"values": x.tolist(), "timestamps": stamps, "window": 50})
    found = [a["index"] for a in r["anomalies"]]
    assert set(spikes) <= set(found)
    assert len(found) <= len(spikes) + 2  # at most a couple of chance 3.5σ-robust points
    first = next(a for a in r["anomalies"] if a["index"] == 100)
    assert first["score"] > 3.5 and first["timestamp"] == "2025-01-01T00:16:40Z"
    assert r["scores"][0] is None and len(r["scores"]) == x.size
    assert r["method"] == "rolling_robust_zscore"


def test_flat_signal_and_min_periods():
    x = [5.0] * 10 + [5.5] + [5.0] * 3
    r = detect_anomalies({"values": x, "window": 5})
    assert [a["index"] for a in r["anomalies"]] == [10]
    assert r["anomalies"][0]["score"] == FLAT_SCORE
    # the window after the spike has MAD 0 but a non-zero mean absolute deviation
    assert r["scores"][11] == 0.0
    early = detect_anomalies({"values": [1.0, 1.1, 0.9, 1.0, 9.0], "window": 30, "min_periods": 4})
    assert [a["index"] for a in early["anomalies"]] == [4]


def test_mean_ad_fallback_scale():
    w = np.array([1.0, 1.0, 1.0, 1.0, 3.0])  # MAD = 0, mean AD = 0.4
    scores, _, mad = robust_zscores(np.append(w, 2.0), window=5)
    assert mad[5] == pytest.approx(0.4 * 1.2533 * 0.6745)
    assert scores[5] == pytest.approx(1.0 / (0.4 * 1.2533))


def test_length_mismatch():
    with pytest.raises(ValidationFailed) as exc:
        detect_anomalies({"values": [1.0, 2.0], "timestamps": [datetime(2025, 1, 1, tzinfo=UTC)]})
    assert exc.value.code == "anomaly_length_mismatch"
