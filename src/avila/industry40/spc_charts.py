"""Shewhart control charts (X̄-R, X̄-S, I-MR) and process capability.

Formulas and constants from D. C. Montgomery, *Introduction to Statistical Quality Control*
(Wiley; ch. 6, Appendix Table VI), as fixed in ``shared/REFERENCES.md``:

* X̄-R: X̿ ± A₂R̄; R chart [D₃R̄, D₄R̄]; σ̂ = R̄/d₂
* X̄-S: X̿ ± A₃s̄; S chart [B₃s̄, B₄s̄]; σ̂ = s̄/c₄
* I-MR: X̄ ± 2.66·MR̄; MR chart [0, 3.267·MR̄]; σ̂ = MR̄/1.128
* Cp = (USL − LSL)/6σ̂, Cpk = min(USL − μ, μ − LSL)/3σ̂ (σ̂ within subgroups);
  Pp, Ppk the same with the overall sample standard deviation (ddof = 1).

The table for n = 2..10 is the binding one; for X̄-S with n > 10 the constants come from the
exact c₄ = √(2/(n−1))·Γ(n/2)/Γ((n−1)/2) (A₃ = 3/(c₄√n), B₃,₄ = 1 ∓ 3√(1−c₄²)/c₄). X̄-R needs
2 ≤ n ≤ 10 (ranges lose efficiency past 10; use X̄-S).

**Phases.** Limits and capability come from the Phase I data (the first ``phase1`` subgroups,
or values for I-MR; all of them when not given). Every point, Phase I and Phase II, is then
plotted against those limits, and run rules are evaluated over the whole sequence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from avila.errors import ValidationFailed

__all__ = ["SPC_CONSTANTS", "capability", "chart_limits", "xbar_s_constants"]

#: n -> (d2, A2, D3, D4, c4, A3, B3, B4), Montgomery Appendix VI (REFERENCES.md).
SPC_CONSTANTS: dict[int, tuple[float, float, float, float, float, float, float, float]] = {
    2: (1.128, 1.880, 0.0, 3.267, 0.7979, 2.659, 0.0, 3.267),
    3: (1.693, 1.023, 0.0, 2.574, 0.8862, 1.954, 0.0, 2.568),
    4: (2.059, 0.729, 0.0, 2.282, 0.9213, 1.628, 0.0, 2.266),
    5: (2.326, 0.577, 0.0, 2.114, 0.9400, 1.427, 0.0, 2.089),
    6: (2.534, 0.483, 0.0, 2.004, 0.9515, 1.287, 0.030, 1.970),
    7: (2.704, 0.419, 0.076, 1.924, 0.9594, 1.182, 0.118, 1.882),
    8: (2.847, 0.373, 0.136, 1.864, 0.9650, 1.099, 0.185, 1.815),
    9: (2.970, 0.337, 0.184, 1.816, 0.9693, 1.032, 0.239, 1.761),
    10: (3.078, 0.308, 0.223, 1.777, 0.9727, 0.975, 0.284, 1.716),
}
IMR_E2 = 2.66
IMR_D4 = 3.267
IMR_D2 = 1.128


def c4_exact(n: int) -> float:
    """c₄(n) = √(2/(n−1))·Γ(n/2)/Γ((n−1)/2), computed in log space for large n."""
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def xbar_s_constants(n: int) -> tuple[float, float, float, float]:
    """(c4, A3, B3, B4) for subgroup size n ≥ 2: the table up to 10, exact beyond."""
    if n in SPC_CONSTANTS:
        c = SPC_CONSTANTS[n]
        return c[4], c[5], c[6], c[7]
    c4 = c4_exact(n)
    k = 3 * math.sqrt(1 - c4 * c4) / c4
    return c4, 3 / (c4 * math.sqrt(n)), max(0.0, 1 - k), 1 + k


def _fail(code: str, path: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=[{"path": path, "message": message}])


def chart_limits(chart: str, data: np.ndarray, phase1: int) -> dict[str, Any]:
    """Limits and plotted points of one chart.

    ``data`` is a 2-D (subgroups × n) array for ``xbar_r``/``xbar_s`` and a 1-D array for
    ``imr``; the first ``phase1`` rows (values) set the limits. Returns ``{"center_line",
    "ucl", "lcl", "sigma_within", "sigma_points", "points", "dispersion": {"center_line",
    "ucl", "lcl", "points"}}`` where ``sigma_points`` is the σ of the plotted statistic that
    the run rules use, and the first I-MR moving range (undefined) is ``None``.
    """
    if chart == "imr":
        x = data
        mr = np.abs(np.diff(x))
        mr_bar = float(mr[: phase1 - 1].mean())
        cl = float(x[:phase1].mean())
        ucl, lcl = cl + IMR_E2 * mr_bar, cl - IMR_E2 * mr_bar
        return {
            "center_line": cl,
            "ucl": ucl,
            "lcl": lcl,
            "sigma_within": mr_bar / IMR_D2,
            "sigma_points": (ucl - cl) / 3,
            "points": x.tolist(),
            "dispersion": {
                "statistic": "moving_range",
                "center_line": mr_bar,
                "ucl": IMR_D4 * mr_bar,
                "lcl": 0.0,
                "points": [None, *mr.tolist()],
            },
        }
    n = data.shape[1]
    means = data.mean(axis=1)
    cl = float(means[:phase1].mean())
    if chart == "xbar_r":
        if n not in SPC_CONSTANTS:
            raise _fail(
                "spc_subgroup_size_out_of_range",
                "$.subgroups",
                f"xbar_r needs subgroups of 2..10 observations, got {n}; use xbar_s",
            )
        d2, a2, d3, d4 = SPC_CONSTANTS[n][:4]
        disp = data.max(axis=1) - data.min(axis=1)
        center = float(disp[:phase1].mean())
        half, sigma, stat, lo, hi = a2 * center, center / d2, "range", d3, d4
    else:
        c4, a3, b3, b4 = xbar_s_constants(n)
        disp = data.std(axis=1, ddof=1)
        center = float(disp[:phase1].mean())
        half, sigma, stat, lo, hi = a3 * center, center / c4, "std_dev", b3, b4
    return {
        "center_line": cl,
        "ucl": cl + half,
        "lcl": cl - half,
        "sigma_within": sigma,
        "sigma_points": half / 3,
        "points": means.tolist(),
        "dispersion": {
            "statistic": stat,
            "center_line": center,
            "ucl": hi * center,
            "lcl": lo * center,
            "points": disp.tolist(),
        },
    }


def _index(usl: float | None, lsl: float | None, mu: float, sigma: float) -> tuple[Any, Any]:
    """(C, Ck) for a given σ; one-sided when only one limit is given, None when σ is 0."""
    if sigma <= 0:
        return None, None
    cp = (usl - lsl) / (6 * sigma) if usl is not None and lsl is not None else None
    sides = []
    if usl is not None:
        sides.append((usl - mu) / (3 * sigma))
    if lsl is not None:
        sides.append((mu - lsl) / (3 * sigma))
    return cp, min(sides) if sides else None


def capability(
    observations: np.ndarray,
    mu: float,
    sigma_within: float,
    usl: float | None,
    lsl: float | None,
) -> dict[str, Any]:
    """``{"cp", "cpk", "pp", "ppk", "sigma_overall"}``. ``mu`` is the chart's center line;
    Pp/Ppk use the sample standard deviation (ddof = 1) of ``observations``. Indices that
    need a missing limit, or a zero σ, are ``None``."""
    obs = observations.ravel()
    sigma_overall = float(obs.std(ddof=1)) if obs.size > 1 else 0.0
    cp, cpk = _index(usl, lsl, mu, sigma_within)
    pp, ppk = _index(usl, lsl, float(obs.mean()), sigma_overall)
    return {"cp": cp, "cpk": cpk, "pp": pp, "ppk": ppk, "sigma_overall": sigma_overall}
