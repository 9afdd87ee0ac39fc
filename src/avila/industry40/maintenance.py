"""Predictive maintenance: remaining useful life (RUL) from degradation trends; MTBF/MTTR.

**Degradation trend.** Each metric with a failure threshold is a degradation signal (the
"threshold-crossing" approach to prognostics, e.g. Lei et al., *Machinery health prognostics:
a systematic review*, MSSP 104, 2018). Three trend models are fitted by least squares —
linear ``a + b·t``, quadratic ``a + b·t + c·t²`` and exponential ``exp(a + b·t)`` (fitted on
log values; only when every value and the threshold are positive). Each is scored by its
error forecasting the last quarter of the fitted readings from the first three quarters
(simple time-series cross-validation) and refitted on all of them.

**Degradation onset.** Many signals stay flat while the unit is healthy and start to move
only later (two-stage degradation; the "first predicting time" of the prognostics literature,
Lei et al. 2018). The trends are fitted from the onset: the first reading after which the
signal (rolling median of 9 readings) stays outside its healthy band, mean ± 3 standard
deviations of the first 20 % of readings (at least the last 10 readings are always used).
Without an onset the whole history is fitted.

**Point RUL.** Every trend model whose forecast error is within 1.5× the best one's is
plausible; RUL is the time from the last reading until the *earliest* of their fitted trends
reaches the threshold (a late prediction costs more than an early one, as in the PHM08
score), and ``model`` names that trend. This keeps RUL honest when the true degradation law is
in none of the families: an accelerating law is not extrapolated as a straight line.

**Uncertainty.** A residual bootstrap (fixed seed, 200 resamples) refits the chosen model;
``rul_interval_hours`` is the 5th–95th percentile of the bootstrap RULs and a metric's
``failure_probability`` is the bootstrap share of RULs within ``horizon_hours``. This covers
trend-estimate uncertainty, not future shocks. The device's RUL is its most urgent metric's;
its failure probability is 1 − Π(1 − pₘ) over metrics (independence assumed). Trends that do
not reach the threshold within ten times the observed span (or twice the horizon) are
reported at that cap with ``rul_censored: true``.

**Risk level** — each band has its own time window, and a probability only counts for the
band whose window it covers: ``critical`` when RUL ≤ 24 h or P(failure within 24 h) ≥ 0.5;
``high`` when RUL ≤ 72 h or P(within 72 h) ≥ 0.5; ``medium`` when RUL ≤ horizon or
P(within the horizon) ≥ 0.2; otherwise ``low``. The probabilities are bootstrap shares, like
``failure_probability`` (``failure_probability_24h`` / ``_72h`` in the answer). A unit certain to
fail within a week but not within three days is ``high``, not ``critical``: the band does not
rise when the caller widens the horizon (it did, when P(within the horizon) ≥ 0.8 alone made a
unit critical). ``failure_probability`` stays the probability within ``horizon_hours``.

**What it is not**: the digital twin's ``health_score`` (:mod:`avila.industry40.twins`) scores
the condition *now* (alarms, anomalies, limits, silence) and does not extrapolate a trend; a
machine can be healthy now (no alarm, health ≥ 80) and still be certain to reach its failure
limit within the horizon. The two answers are complementary, not contradictory.

**Without a threshold** a metric's threshold is inferred as its baseline (first 20 % of
points) mean ± 6 baseline standard deviations in the direction of its trend
(``threshold_source: "inferred"``): a heuristic, reported as such.

**Reliability**: MTBF = operating (up) time / number of failures, MTTR = mean repair time,
inherent availability = MTBF / (MTBF + MTTR) (IEC 60050-192 / MIL-HDBK-338 definitions).

**Scoring**: :func:`phm08_score` is the PHM08 challenge score (Saxena et al., 2008):
d = predicted − true; e^(−d/13) − 1 if d < 0 else e^(d/10) − 1, summed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from avila.errors import ValidationFailed
from avila.schemas.industry40 import (
    MaintenancePredictRequest,
    MetricHistory,
    RepairEvent,
    convert,
)

__all__ = [
    "estimate_rul",
    "phm08_score",
    "predict_maintenance",
    "reliability_metrics",
    "risk_level",
]

MIN_POINTS = 5
N_BOOT = 200
GRID = 4000
_MODELS = ("linear", "quadratic", "exponential")

RECOMMENDATIONS = {
    "critical": "Stop and service the equipment now: failure is imminent.",
    "high": "Schedule maintenance within the next shift; prepare spare parts.",
    "medium": "Plan maintenance within the forecast horizon and increase monitoring.",
    "low": "No action needed; continue routine monitoring.",
}


def _fail(code: str, path: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=[{"path": path, "message": message}])


def phm08_score(
    predicted: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray
) -> float:
    """PHM08 asymmetric score (lower is better; late predictions cost more)."""
    d = np.asarray(predicted, dtype=float) - np.asarray(true, dtype=float)
    return float(np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0)).sum())


#: (band, window in hours, probability of failure within the window that puts a unit in it);
#: the last band's window is the request's horizon.
RISK_BANDS = (("critical", 24.0, 0.5), ("high", 72.0, 0.5))
MEDIUM_PROBABILITY = 0.2


def risk_level(
    failure_probability: float,
    rul_hours: float | None,
    horizon_hours: float,
    *,
    within_24h: float = 0.0,
    within_72h: float = 0.0,
) -> str:
    """Risk band (see module doc): ``failure_probability`` is P(failure within
    ``horizon_hours``), ``within_24h`` / ``within_72h`` P(failure within 24 / 72 h)."""
    rul = np.inf if rul_hours is None else rul_hours
    within = {24.0: within_24h, 72.0: within_72h}
    for level, window, p_min in RISK_BANDS:
        if rul <= window or within[window] >= p_min:
            return level
    if failure_probability >= MEDIUM_PROBABILITY or rul <= horizon_hours:
        return "medium"
    return "low"


def _design(model: str, t: np.ndarray) -> np.ndarray:
    cols = [np.ones_like(t), t] + ([t * t] if model == "quadratic" else [])
    return np.stack(cols, axis=-1)


def _fit(model: str, t: np.ndarray, y: np.ndarray) -> np.ndarray:
    target = np.log(y) if model == "exponential" else y
    coef, *_ = np.linalg.lstsq(_design(model, t), target, rcond=None)
    return np.asarray(coef, dtype=float)


def _predict(model: str, coef: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = _design(model, t) @ coef
    return np.asarray(np.exp(np.minimum(out, 700)) if model == "exponential" else out, dtype=float)


ONSET_WINDOW = 9
MIN_FIT_POINTS = 10
PLAUSIBLE_ERROR_RATIO = 1.5


def _plausible_models(t: np.ndarray, y: np.ndarray, threshold: float) -> list[str]:
    """Trend models whose last-quarter forecast error is within 1.5× the best one's."""
    candidates = ["linear"]
    if len(t) >= 8:
        candidates.append("quadratic")
    if np.all(y > 0) and threshold > 0:
        candidates.append("exponential")
    if len(t) < 8:
        return ["linear"]
    cut = int(len(t) * 0.75)
    errors = {}
    for m in candidates:
        pred = _predict(m, _fit(m, t[:cut], y[:cut]), t[cut:])
        errors[m] = float(np.sqrt(np.mean((pred - y[cut:]) ** 2)))
    best = min(errors.values())
    return [m for m in candidates if errors[m] <= PLAUSIBLE_ERROR_RATIO * best]


def _degradation_onset(y: np.ndarray) -> int:
    """Index of the first reading after which the rolling median stays outside the healthy
    band (mean ± 3 sd of the first 20 % of readings); 0 when it ends inside it."""
    n = len(y)
    if n < 2 * MIN_FIT_POINTS:
        return 0
    base = y[: max(MIN_POINTS, n // 5)]
    mean, sd = float(np.mean(base)), float(np.std(base, ddof=1))
    half = ONSET_WINDOW // 2
    padded = np.pad(y, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, ONSET_WINDOW)
    outside = np.abs(np.median(windows, axis=1) - mean) > 3 * sd
    if not outside[-1]:
        return 0
    inside = np.flatnonzero(~outside)
    onset = int(inside[-1]) + 1 if inside.size else 0
    return min(onset, n - MIN_FIT_POINTS)


def _first_crossing(
    curves: np.ndarray, grid: np.ndarray, threshold: float, sign: float
) -> np.ndarray:
    """Per column of ``curves`` (grid × B), the first grid time where sign·curve ≥ sign·thr,
    linearly interpolated; ``inf`` when never."""
    above = sign * (curves - threshold) >= 0
    hit = above.any(axis=0)
    k = above.argmax(axis=0)
    cols = np.arange(curves.shape[1])
    prev = np.maximum(k - 1, 0)
    y0, y1 = curves[prev, cols], curves[k, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(y1 != y0, (threshold - y0) / (y1 - y0), 1.0)
    frac = np.clip(np.nan_to_num(frac, nan=1.0), 0.0, 1.0)
    at = np.where(k == 0, grid[0], grid[prev] + frac * (grid[k] - grid[prev]))
    out = np.where(hit, at, np.inf)
    return out


def estimate_rul(
    t_hours: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    threshold: float,
    *,
    direction: str | None = None,
    horizon_hours: float = 168.0,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """RUL of one degradation signal, from its last reading, in hours.

    ``t_hours`` are reading times in hours (any origin, increasing). Returns ``{"model",
    "rul_hours", "rul_interval_hours": [lo, hi], "rul_censored", "failure_probability",
    "trend_per_hour", "current_value", "failure_threshold", "direction", "progress"}`` where
    ``failure_probability_24h`` / ``_72h`` are the same bootstrap shares within 24 / 72 h, and
    ``progress`` is how far the fitted current value has moved from the healthy level (mean
    of the first readings) towards the threshold (0 = new, 1 = failed).
    """
    t = np.asarray(t_hours, dtype=float)
    y = np.asarray(values, dtype=float)
    sign = 1.0
    if direction is None:
        direction = "increasing" if threshold >= float(np.mean(y)) else "decreasing"
    if direction == "decreasing":
        sign = -1.0
    now = float(t[-1])
    healthy = float(np.mean(y[:MIN_POINTS]))
    span = max(float(t[-1] - t[0]), 1e-9)
    cap = max(10 * span, 2 * horizon_hours)
    grid = np.linspace(0.0, cap, GRID + 1)
    onset = _degradation_onset(y)
    t, y = t[onset:], y[onset:]
    rel = t - now  # fit in time relative to now for conditioning
    fits = {m: _fit(m, rel, y) for m in _plausible_models(rel, y, threshold)}
    first = {
        m: float(_first_crossing(_predict(m, c, grid)[:, None], grid, threshold, sign)[0])
        for m, c in fits.items()
    }
    model = min(fits, key=lambda m: (first[m], _MODELS.index(m)))
    coef = fits[model]
    fitted = _predict(model, coef, rel)
    current = float(fitted[-1])

    # residual bootstrap (in the space the model is fitted in)
    target = np.log(y) if model == "exponential" else y
    target_fit = np.log(fitted) if model == "exponential" else fitted
    resid = target - target_fit
    rng = np.random.default_rng(seed)
    boot_targets = target_fit[None, :] + rng.choice(resid, size=(n_boot, len(y)), replace=True)
    boot_coef, *_ = np.linalg.lstsq(_design(model, rel), boot_targets.T, rcond=None)
    curves = _design(model, grid) @ np.column_stack([coef, boot_coef])
    if model == "exponential":
        curves = np.exp(np.minimum(curves, 700))
    crossings = _first_crossing(curves, grid, threshold, sign)
    observed_failed = sign * (float(np.mean(y[-3:])) - threshold) >= 0
    if observed_failed:
        crossings[:] = 0.0
    point, boot = crossings[0], crossings[1:]
    censored = not np.isfinite(point)
    boot_capped = np.minimum(boot, cap)
    slope = float(np.gradient(curves[:2, 0], grid[:2])[-1])
    denom = threshold - healthy
    progress = (current - healthy) / denom if denom != 0 else 1.0
    return {
        "model": model,
        "rul_hours": float(min(point, cap)),
        "rul_interval_hours": [
            float(np.percentile(boot_capped, 5)),
            float(np.percentile(boot_capped, 95)),
        ],
        "rul_censored": bool(censored),
        "failure_probability": float(np.mean(boot <= horizon_hours)),
        "failure_probability_24h": float(np.mean(boot <= 24.0)),
        "failure_probability_72h": float(np.mean(boot <= 72.0)),
        "trend_per_hour": slope,
        "current_value": current,
        "failure_threshold": float(threshold),
        "direction": direction,
        "progress": float(np.clip(progress, 0.0, 1.0)),
    }


#: Epoch seconds a timestamp may take: the datetime range (years 1 to 9999).
_EPOCH_S_MIN = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_EPOCH_S_MAX = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def _hours(stamps: Sequence[datetime | float]) -> np.ndarray:
    """Hours since the epoch; a naive datetime is UTC (not the server's local time)."""
    return np.asarray(
        [
            (s if s.tzinfo else s.replace(tzinfo=UTC)).timestamp() / 3600.0
            if isinstance(s, datetime)
            else float(s) / 3600.0
            for s in stamps
        ]
    )


def _prepare(name: str, h: MetricHistory) -> tuple[np.ndarray, np.ndarray] | None:
    if len(h.timestamps) != len(h.values):
        raise _fail(
            "maintenance_length_mismatch",
            f"$.metrics.{name}",
            f"metric {name!r} has {len(h.timestamps)} timestamps but {len(h.values)} values",
        )
    for i, s in enumerate(h.timestamps):
        if not isinstance(s, datetime) and not _EPOCH_S_MIN <= s <= _EPOCH_S_MAX:
            raise _fail(
                "maintenance_invalid_timestamp",
                f"$.metrics.{name}.timestamps[{i}]",
                f"timestamp {s!r} is not epoch seconds of a date in years 1 to 9999",
            )
    if len(h.values) < MIN_POINTS:
        return None
    t = _hours(h.timestamps)
    order = np.argsort(t, kind="stable")
    t, y = t[order], np.asarray(h.values, dtype=float)[order]
    if t[-1] <= t[0]:
        return None
    return t, y


def _inferred_threshold(t: np.ndarray, y: np.ndarray) -> tuple[float, str] | None:
    base = y[: max(MIN_POINTS, len(y) // 5)]
    sd = float(np.std(base, ddof=1))
    slope = float(np.polyfit(t - t[-1], y, 1)[0])
    if sd <= 0 or slope == 0:
        return None
    direction = "increasing" if slope > 0 else "decreasing"
    return float(np.mean(base) + np.sign(slope) * 6 * sd), direction


_PROBABILITY_KEYS = ("failure_probability", "failure_probability_24h", "failure_probability_72h")


def predict_maintenance(
    request: MaintenancePredictRequest | Mapping[str, Any],
) -> dict[str, Any]:
    """Failure risk of one device from its metric histories.

    Returns ``{"device_id", "failure_probability", "failure_probability_24h",
    "failure_probability_72h", "risk_level", "rul_hours",
    "rul_interval_hours": [lo, hi], "contributing_metrics": [per-metric dicts from
    :func:`estimate_rul` plus "metric" and "threshold_source", most urgent first],
    "recommendation", "horizon_hours", "skipped_metrics": [names with < 5 points or no
    usable trend]}``. ``rul_hours`` and the interval are ``None`` when no metric could be
    assessed (risk ``low``, recommendation says data are insufficient).
    """
    req = convert(MaintenancePredictRequest, request)
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    for name, hist in sorted((req.metrics or {}).items()):
        prepared = _prepare(name, hist)
        if prepared is None:
            skipped.append(name)
            continue
        t, y = prepared
        direction: str | None = hist.direction
        if hist.failure_threshold is not None:
            threshold, source = hist.failure_threshold, "given"
        else:
            inferred = _inferred_threshold(t, y)
            if inferred is None:
                skipped.append(name)
                continue
            (threshold, direction), source = inferred, "inferred"
        r = estimate_rul(t, y, threshold, direction=direction, horizon_hours=req.horizon_hours)
        results.append({"metric": name, "threshold_source": source, **r})
    results.sort(key=lambda r: (r["rul_hours"], -r["failure_probability"], r["metric"]))
    if not results:
        return {
            "device_id": req.device_id,
            "failure_probability": 0.0,
            "failure_probability_24h": 0.0,
            "failure_probability_72h": 0.0,
            "risk_level": "low",
            "rul_hours": None,
            "rul_interval_hours": None,
            "contributing_metrics": [],
            "recommendation": "Insufficient data: send at least 5 readings of a metric with a "
            "failure threshold.",
            "horizon_hours": req.horizon_hours,
            "skipped_metrics": skipped,
        }
    worst = results[0]

    def any_fails(key: str) -> float:
        return 1.0 - float(np.prod([1.0 - r[key] for r in results]))

    p, p24, p72 = (any_fails(k) for k in _PROBABILITY_KEYS)
    level = risk_level(p, worst["rul_hours"], req.horizon_hours, within_24h=p24, within_72h=p72)
    return {
        "device_id": req.device_id,
        "failure_probability": p,
        "failure_probability_24h": p24,
        "failure_probability_72h": p72,
        "risk_level": level,
        "rul_hours": worst["rul_hours"],
        "rul_interval_hours": worst["rul_interval_hours"],
        "contributing_metrics": [
            r for r in results if r["failure_probability"] > 0 or r["progress"] > 0.5
        ]
        or [worst],
        "recommendation": f"{RECOMMENDATIONS[level]} Most urgent metric: {worst['metric']}"
        f" (RUL {worst['rul_hours']:.0f} h; failure within 24 h: {p24:.0%}, 72 h: {p72:.0%},"
        f" {req.horizon_hours:g} h: {p:.0%}).",
        "horizon_hours": req.horizon_hours,
        "skipped_metrics": skipped,
    }


def reliability_metrics(
    repairs: Sequence[RepairEvent | Mapping[str, Any]],
    *,
    observed_from: datetime,
    observed_to: datetime,
) -> dict[str, Any]:
    """MTBF / MTTR over an observation window from failure→restoration events.

    Returns ``{"failures", "uptime_hours", "downtime_hours", "mtbf_hours", "mttr_hours",
    "inherent_availability"}``; MTBF is ``None`` with no failure (and MTTR too). Repairs are
    clipped to the window; overlapping repairs raise ``reliability_overlapping_repairs``.
    """
    if observed_to <= observed_from:
        raise _fail(
            "reliability_empty_window", "$.observed_to", "observed_to must be after observed_from"
        )
    events = sorted((convert(RepairEvent, r) for r in repairs), key=lambda e: e.failed_at)
    down = 0.0
    repair_hours = []
    prev_end: datetime | None = None
    for i, e in enumerate(events):
        if e.restored_at < e.failed_at:
            raise _fail(
                "reliability_restored_before_failed",
                f"$[{i}].restored_at",
                "restored_at is before failed_at",
            )
        if prev_end is not None and e.failed_at < prev_end:
            raise _fail("reliability_overlapping_repairs", f"$[{i}].failed_at", "repairs overlap")
        prev_end = e.restored_at
        if observed_from <= e.failed_at < observed_to:
            repair_hours.append((e.restored_at - e.failed_at).total_seconds() / 3600.0)
        lo, hi = max(e.failed_at, observed_from), min(e.restored_at, observed_to)
        if hi > lo:
            down += (hi - lo).total_seconds() / 3600.0
    window = (observed_to - observed_from).total_seconds() / 3600.0
    failures = sum(1 for e in events if observed_from <= e.failed_at < observed_to)
    up = window - down
    mtbf = up / failures if failures else None
    mttr = float(np.mean(repair_hours)) if repair_hours else None
    avail = (
        mtbf / (mtbf + mttr) if mtbf is not None and mttr is not None and mtbf + mttr > 0 else None
    )
    return {
        "failures": failures,
        "uptime_hours": up,
        "downtime_hours": down,
        "mtbf_hours": mtbf,
        "mttr_hours": mttr,
        "inherent_availability": avail,
    }
