"""Sensor anomaly detection: rolling robust z-score (median / MAD).

Modified z-score of Iglewicz & Hoaglin, *How to Detect and Handle Outliers* (ASQC, 1993):
Mᵢ = 0.6745 · (xᵢ − median) / MAD, with MAD the median absolute deviation from the median;
|Mᵢ| > 3.5 is their recommended outlier cut-off. Here the median and MAD come from the
**trailing** window of the ``window`` points before xᵢ (the point itself excluded, so a spike
cannot mask itself and the detector works on a stream). When the window's MAD is 0 (a flat
signal) the mean absolute deviation × 1.2533 (= √(π/2), its normal-consistency factor) is used;
if that is 0 too, any departure from the median scores ±1e9 (``FLAT_SCORE``, finite so it
survives JSON). Points with fewer than
``min_periods`` (default ``window``) earlier points get no score (``None``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from avila.errors import ValidationFailed
from avila.schemas.industry40 import AnomalyDetectRequest, convert

__all__ = ["detect_anomalies", "robust_zscores"]

_K = 0.6745  # Φ⁻¹(0.75): makes MAD consistent with σ under normality
_MEAN_AD = 1.2533  # √(π/2)
FLAT_SCORE = 1e9


def robust_zscores(
    values: Sequence[float] | np.ndarray, window: int = 30, min_periods: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, medians, mads) per point; NaN where fewer than ``min_periods`` earlier points.

    ``mads`` holds the scale actually used (MAD, or the mean-AD fallback rescaled to MAD
    units)."""
    x = np.asarray(values, dtype=float)
    need = window if min_periods is None else min(min_periods, window)
    n = len(x)
    scores = np.full(n, np.nan)
    med = np.full(n, np.nan)
    mad = np.full(n, np.nan)
    if n > need:
        # windows of the `window` points before i (shorter at the start when min_periods < window)
        for i in range(need, min(window, n)):
            med[i], mad[i] = _center_scale(x[:i])
        if n > window:
            # wins[j] = x[j : j + window] is the window of point i = j + window
            wins = sliding_window_view(x[:-1], window)
            m = np.median(wins, axis=1)
            d = np.abs(wins - m[:, None])
            s = np.median(d, axis=1)
            fallback = d.mean(axis=1) * _MEAN_AD * _K
            med[window:] = m
            mad[window:] = np.where(s > 0, s, fallback)
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = x - med
            z = _K * dev / mad
            z = np.where(mad > 0, z, np.where(dev == 0, 0.0, np.sign(dev) * FLAT_SCORE))
        scores[need:] = z[need:]
    return scores, med, mad


def _center_scale(w: np.ndarray) -> tuple[float, float]:
    m = float(np.median(w))
    d = np.abs(w - m)
    s = float(np.median(d))
    return m, s if s > 0 else float(d.mean() * _MEAN_AD * _K)


def detect_anomalies(request: AnomalyDetectRequest | Mapping[str, Any]) -> dict[str, Any]:
    """Anomalous points of one series.

    Returns ``{"anomalies": [{"index", "value", "score", "median", "mad", "timestamp"?}],
    "scores": [score or None per point], "threshold", "window", "method":
    "rolling_robust_zscore"}``; a point is anomalous when ``|score| > threshold``.
    """
    req = convert(AnomalyDetectRequest, request)
    if req.timestamps is not None and len(req.timestamps) != len(req.values):
        raise ValidationFailed(
            "timestamps and values differ in length",
            code="anomaly_length_mismatch",
            details=[{"path": "$.timestamps", "message": "must have one timestamp per value"}],
        )
    scores, med, mad = robust_zscores(req.values, req.window, req.min_periods)
    anomalies = []
    for i in np.flatnonzero(np.abs(np.nan_to_num(scores, nan=0.0)) > req.threshold):
        item: dict[str, Any] = {
            "index": int(i),
            "value": req.values[i],
            "score": float(scores[i]),
            "median": float(med[i]),
            "mad": float(mad[i]),
        }
        if req.timestamps is not None:
            item["timestamp"] = req.timestamps[i].isoformat().replace("+00:00", "Z")
        anomalies.append(item)
    return {
        "anomalies": anomalies,
        "scores": [None if np.isnan(s) else float(s) for s in scores],
        "threshold": req.threshold,
        "window": req.window,
        "method": "rolling_robust_zscore",
    }
