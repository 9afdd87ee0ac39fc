"""SPC charts against Montgomery's piston rings and numpy oracles; every Nelson rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from avila.errors import ValidationFailed
from avila.industry40.quality import (
    defect_rate,
    first_pass_yield,
    inspect_quality,
    rolled_throughput_yield,
)
from avila.industry40.spc_charts import SPC_CONSTANTS, c4_exact, xbar_s_constants
from avila.industry40.spc_rules import evaluate_rules

DATA = Path(__file__).resolve().parents[1] / "data" / "pistonrings.txt"


def piston_rings() -> tuple[np.ndarray, np.ndarray]:
    """(40 × 5 diameters, trial flag per sample) from the copied Montgomery data."""
    rows = [line.split() for line in DATA.read_text().splitlines()[1:] if line.strip()]
    diam = np.array([float(r[0]) for r in rows])
    sample = np.array([int(r[1]) for r in rows])
    trial = np.array([r[2] == "TRUE" for r in rows])
    groups = np.stack([diam[sample == s] for s in range(1, 41)])
    return groups, np.array([trial[sample == s][0] for s in range(1, 41)])


# --- Montgomery's piston rings ---------------------------------------------------------------


def test_piston_rings_phase1_limits_match_montgomery():
    groups, trial = piston_rings()
    assert groups.shape == (40, 5) and trial[:25].all() and not trial[25:].any()
    r = inspect_quality({"subgroups": groups.tolist(), "chart": "xbar_r", "phase1_subgroups": 25})
    assert round(r["center_line"], 3) == 74.001
    assert round(r["dispersion"]["center_line"], 3) == 0.023
    assert round(r["ucl"], 3) == 74.014
    assert round(r["lcl"], 3) == 73.988
    assert r["dispersion"]["lcl"] == 0.0
    # The book prints R-chart UCL = 0.049 (D4 × its rounded R̄ = 0.023); from the unrounded
    # R̄ of these data (0.02276, numpy below) it is 0.0481.
    rbar = float(np.ptp(groups[:25], axis=1).mean())
    assert round(rbar, 5) == 0.02276
    assert r["dispersion"]["ucl"] == pytest.approx(2.114 * rbar, abs=1e-12)
    assert round(r["dispersion"]["ucl"], 4) == 0.0481


def test_piston_rings_phase2_out_of_control_samples():
    groups, _ = piston_rings()
    r = inspect_quality({"subgroups": groups.tolist(), "phase1_subgroups": 25})
    # independent numpy computation of the limits and the points beyond them
    means = groups.mean(axis=1)
    rbar = np.ptp(groups[:25], axis=1).mean()
    xbarbar = means[:25].mean()
    ucl, lcl = xbarbar + 0.577 * rbar, xbarbar - 0.577 * rbar
    beyond = np.flatnonzero((means > ucl) | (means < lcl))
    assert beyond.tolist() == [36, 37, 38]  # Montgomery's samples 37, 38, 39
    rule1 = [v["index"] for v in r["violations"] if v["rule"] == "nelson_1"]
    assert rule1 == beyond.tolist()
    assert all(v["index"] >= 25 for v in r["violations"])  # Phase I is in control
    assert not [v for v in r["violations"] if v["rule"] == "dispersion_beyond_limits"]


def test_piston_rings_capability_against_numpy():
    """No published Cp/Cpk for these data with these limits could be checked offline, so the
    reference is the formula (REFERENCES.md, SPC: Cp = (USL − LSL)/6σ̂, Cpk = min(USL − μ,
    μ − LSL)/3σ̂, σ̂ = R̄/d₂; Pp/Ppk with the overall sample standard deviation), computed
    here with numpy from the raw diameters, and the expected defect rate with scipy's normal
    distribution. (Montgomery's worked example is remembered as printing Cp ≈ 1.68 from the
    rounded σ̂ = 0.0099; that could not be verified here, so it is not asserted. Unrounded,
    σ̂ = 0.009785 and Cp = 1.70.)"""
    from scipy.stats import norm

    groups, _ = piston_rings()
    r = inspect_quality(
        {"subgroups": groups.tolist(), "phase1_subgroups": 25, "usl": 74.05, "lsl": 73.95}
    )
    p1 = groups[:25]
    sigma = np.ptp(p1, axis=1).mean() / 2.326
    mu = p1.mean()
    s = p1.std(ddof=1)
    assert r["cp"] == pytest.approx(0.1 / (6 * sigma))
    assert r["cpk"] == pytest.approx(min(74.05 - mu, mu - 73.95) / (3 * sigma))
    assert r["pp"] == pytest.approx(0.1 / (6 * s))
    assert r["ppk"] == pytest.approx(min(74.05 - mu, mu - 73.95) / (3 * s))
    assert round(r["cp"], 2) == 1.70
    assert r["defect_rate"] == 0.0 and r["first_pass_yield"] == 1.0
    expected = norm.sf((74.05 - mu) / sigma) + norm.cdf((73.95 - mu) / sigma)
    assert r["expected_defect_rate"] == pytest.approx(expected, rel=1e-6)


# --- constants --------------------------------------------------------------------------------


def _d2(n: int) -> float:
    """d2 = ∫ 1 − Φ(x)^n − (1 − Φ(x))^n dx, by the trapezoid rule."""
    x = np.linspace(-10, 10, 200_001)
    phi = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x[::100]]))
    phi = np.interp(x, x[::100], phi)
    f = 1 - phi**n - (1 - phi) ** n
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(x)))


@pytest.mark.parametrize("n", range(2, 11))
def test_table_agrees_with_exact_constants(n):
    d2, a2, _d3, _d4, c4, a3, b3, b4 = SPC_CONSTANTS[n]
    exact_d2 = _d2(n)
    assert round(exact_d2, 3) == pytest.approx(d2, abs=1e-9)
    assert round(3 / (exact_d2 * math.sqrt(n)), 3) == pytest.approx(a2, abs=1e-9)
    assert round(c4_exact(n), 4) == pytest.approx(c4, abs=1e-9)
    k = 3 * math.sqrt(1 - c4_exact(n) ** 2) / c4_exact(n)
    assert round(3 / (c4_exact(n) * math.sqrt(n)), 3) == pytest.approx(a3, abs=1e-9)
    assert round(max(0.0, 1 - k), 3) == pytest.approx(b3, abs=1e-9)
    assert round(1 + k, 3) == pytest.approx(b4, abs=1e-9)


def test_xbar_s_constants_beyond_table():
    # Montgomery Appendix VI, n = 25
    c4, a3, b3, b4 = xbar_s_constants(25)
    assert (round(c4, 4), round(a3, 3), round(b3, 3), round(b4, 3)) == (0.9896, 0.606, 0.565, 1.435)


# --- charts vs numpy --------------------------------------------------------------------------


def test_xbar_s_against_numpy():
    rng = np.random.default_rng(7)
    g = rng.normal(10, 2, size=(30, 6))
    r = inspect_quality({"subgroups": g.tolist(), "chart": "xbar_s", "usl": 17, "lsl": 3})
    s = g.std(axis=1, ddof=1)
    sbar = s.mean()
    assert r["center_line"] == pytest.approx(g.mean())
    assert r["ucl"] == pytest.approx(g.mean() + 1.287 * sbar)
    assert r["dispersion"]["ucl"] == pytest.approx(1.970 * sbar)
    assert r["dispersion"]["lcl"] == pytest.approx(0.030 * sbar)
    assert r["cp"] == pytest.approx(14 / (6 * sbar / 0.9515))
    assert r["pp"] == pytest.approx(14 / (6 * g.std(ddof=1)))


def test_imr_against_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(50, 1, 40)
    x[35] = 58
    r = inspect_quality({"values": x.tolist(), "phase1_subgroups": 30, "usl": 54})
    mr = np.abs(np.diff(x[:30]))
    assert r["chart"] == "imr"
    assert r["center_line"] == pytest.approx(x[:30].mean())
    assert r["ucl"] == pytest.approx(x[:30].mean() + 2.66 * mr.mean())
    assert r["dispersion"]["ucl"] == pytest.approx(3.267 * mr.mean())
    assert r["dispersion"]["points"][0] is None
    assert {"rule": "nelson_1", "index": 35} in r["violations"]
    assert {"rule": "dispersion_beyond_limits", "index": 35} in r["violations"]
    assert r["cp"] is None  # one-sided spec
    assert r["cpk"] == pytest.approx((54 - x[:30].mean()) / (3 * mr.mean() / 1.128))
    assert r["defect_rate"] == pytest.approx(np.mean(x > 54))


# --- run rules --------------------------------------------------------------------------------

_rng = np.random.default_rng(11)
_within = _rng.uniform(-0.9, 0.9, 15)

# (rule, series that triggers it, indices flagged, a near-miss series that does not)
RULES = [
    ("nelson_1", [0, 0, 3.5, 0, -3.2], [2, 4], [0, 2.9, -2.9, 0]),
    ("nelson_2", [0.5] * 10, [8, 9], [0.5] * 8 + [-0.5] + [0.5] * 8),
    ("nelson_3", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [5], [0.0, 0.1, 0.2, 0.3, 0.4, 0.4]),
    ("nelson_3", [0.5, 0.4, 0.3, 0.2, 0.1, 0.0], [5], [0.5, 0.4, 0.3, 0.2, 0.1]),
    ("nelson_4", [0.1, -0.1] * 7, [13], [0.1, -0.1] * 6 + [0.1]),
    ("nelson_5", [0, 2.5, 0, 2.5], [3], [2.5, 0, 0, 2.5, -2.5]),
    ("nelson_5", [0, -2.2, -2.4, -2.1], [2, 3], [2.2, -2.4, 0]),
    ("nelson_6", [1.5, 1.5, 0, 1.5, 1.5], [4], [1.5, 1.5, 0, 0, 1.5]),
    ("nelson_7", _within.tolist(), [14], _within[:14].tolist()),
    ("nelson_8", [1.5, -1.5] * 4, [7], [1.5, -1.5] * 3 + [0.5]),
]


@pytest.mark.parametrize(("rule", "hit", "indices", "miss"), RULES)
def test_each_nelson_rule(rule, hit, indices, miss):
    found = [v["index"] for v in evaluate_rules(hit, 0.0, 1.0) if v["rule"] == rule]
    assert found == indices
    assert not [v for v in evaluate_rules(miss, 0.0, 1.0) if v["rule"] == rule]


def test_western_electric_rules():
    eight = [0.5] * 8
    we = evaluate_rules(eight, 0.0, 1.0, "western_electric")
    assert we == [{"rule": "western_electric_4", "index": 7}]
    assert not [v for v in evaluate_rules(eight, 0.0, 1.0) if v["rule"] == "nelson_2"]
    names = {
        v["rule"]
        for v in evaluate_rules([0, 3.5, 2.5, 2.5, 1.5, 1.5], 0.0, 1.0, "western_electric")
    }
    assert names == {"western_electric_1", "western_electric_2", "western_electric_3"}


def test_in_control_random_series_has_no_rule1_violation():
    x = np.random.default_rng(5).normal(0, 1, 200).clip(-2.9, 2.9)
    assert not [v for v in evaluate_rules(x, 0.0, 1.0) if v["rule"] == "nelson_1"]


# --- yields and bad input ---------------------------------------------------------------------


def test_defect_rate_and_yields():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert defect_rate(x, usl=4.5, lsl=1.5) == pytest.approx(0.4)
    assert defect_rate(x, usl=None, lsl=None) == 0.0
    assert first_pass_yield(200, 190) == 0.95
    assert rolled_throughput_yield([0.95, 0.9]) == pytest.approx(0.855)
    with pytest.raises(ValidationFailed) as exc:
        first_pass_yield(10, 11)
    assert exc.value.code == "fpy_passed_exceeds_units"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"subgroups": [[1, 2], [3]]}, "spc_unequal_subgroups"),
        ({"subgroups": [[1, 2], [3, 4]], "values": [1, 2, 3]}, "spc_needs_subgroups_or_values"),
        ({}, "spc_needs_subgroups_or_values"),
        ({"subgroups": [[1, 2], [3, 4]], "chart": "imr"}, "spc_chart_needs_values"),
        ({"values": [1, 2, 3, 4], "chart": "xbar_r"}, "spc_chart_needs_subgroups"),
        ({"subgroups": [[1, 2], [3, 4]], "phase1_subgroups": 3}, "spc_phase1_exceeds_data"),
        ({"subgroups": [[float(i) for i in range(11)]] * 3}, "spc_subgroup_size_out_of_range"),
        ({"subgroups": [[1, 2], [3, 4]], "usl": 1, "lsl": 2}, "spc_usl_not_above_lsl"),
        ({"values": [1, 2, 3], "chart": "p"}, "validation_failed"),
    ],
)
def test_bad_requests(body, code):
    with pytest.raises(ValidationFailed) as exc:
        inspect_quality(body)
    assert exc.value.code == code
    assert exc.value.details and "path" in exc.value.details[0]


def test_constant_process_has_no_capability_and_no_crash():
    r = inspect_quality({"subgroups": [[5.0, 5.0]] * 5, "usl": 6, "lsl": 4})
    assert r["cp"] is None and r["pp"] is None and r["violations"] == []
