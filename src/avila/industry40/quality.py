"""Quality inspection: statistical process control for ``POST /industry40/quality/inspect``.

Charts and capability live in :mod:`avila.industry40.spc_charts` (Montgomery, *Introduction
to Statistical Quality Control*), run rules in :mod:`avila.industry40.spc_rules` (Nelson 1984;
Western Electric 1956). This module validates a request, runs both and adds the yield
figures:

* ``defect_rate`` — observed fraction of individual measurements outside [LSL, USL] (all
  data, Phase I and II); ``expected_defect_rate`` — the same under a normal model with the
  Phase I mean and within-subgroup σ̂ (for Cpk-consistent ppm).
* :func:`first_pass_yield` — units passing the first time / units entering; and
  :func:`rolled_throughput_yield` — the product of the steps' first-pass yields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from avila.errors import ValidationFailed
from avila.industry40.spc_charts import capability, chart_limits
from avila.industry40.spc_rules import evaluate_rules
from avila.schemas.industry40 import QualityInspectRequest, convert

__all__ = ["defect_rate", "first_pass_yield", "inspect_quality", "rolled_throughput_yield"]


def _fail(code: str, path: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=[{"path": path, "message": message}])


def defect_rate(
    observations: Sequence[float] | np.ndarray, usl: float | None, lsl: float | None
) -> float:
    """Fraction of ``observations`` strictly above ``usl`` or strictly below ``lsl``."""
    x = np.asarray(observations, dtype=float).ravel()
    if x.size == 0:
        return 0.0
    bad = np.zeros(x.shape, dtype=bool)
    if usl is not None:
        bad |= x > usl
    if lsl is not None:
        bad |= x < lsl
    return float(bad.mean())


def _normal_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def first_pass_yield(units_in: int, passed_first_time: int) -> float:
    """FPY = units that pass without rework or scrap / units that entered the step."""
    if units_in <= 0:
        raise _fail("fpy_no_units", "$.units_in", "units_in must be > 0")
    if not 0 <= passed_first_time <= units_in:
        raise _fail(
            "fpy_passed_exceeds_units",
            "$.passed_first_time",
            "passed_first_time must be between 0 and units_in",
        )
    return passed_first_time / units_in


def rolled_throughput_yield(step_yields: Sequence[float]) -> float:
    """RTY = Π FPY of the process steps (each a fraction in [0, 1])."""
    for i, y in enumerate(step_yields):
        if not 0 <= y <= 1:
            raise _fail("fpy_out_of_range", f"$[{i}]", "a step yield must be in [0, 1]")
    return float(np.prod(np.asarray(step_yields, dtype=float)))


def _data(req: QualityInspectRequest) -> tuple[str, np.ndarray, str]:
    if (req.subgroups is None) == (req.values is None):
        raise _fail(
            "spc_needs_subgroups_or_values",
            "$",
            "send exactly one of 'subgroups' (list of lists) or 'values' (list of numbers)",
        )
    if req.values is not None:
        chart = req.chart or "imr"
        if chart != "imr":
            raise _fail(
                "spc_chart_needs_subgroups", "$.chart", f"{chart} needs 'subgroups', not 'values'"
            )
        if len(req.values) < 3:
            raise _fail("spc_too_few_points", "$.values", "need at least 3 values")
        return chart, np.asarray(req.values, dtype=float), "$.values"
    assert req.subgroups is not None
    chart = req.chart or "xbar_r"
    if chart == "imr":
        raise _fail("spc_chart_needs_values", "$.chart", "imr needs 'values', not 'subgroups'")
    sizes = {len(g) for g in req.subgroups}
    if len(sizes) != 1:
        raise _fail(
            "spc_unequal_subgroups",
            "$.subgroups",
            f"all subgroups must have the same size, got sizes {sorted(sizes)}",
        )
    if len(req.subgroups) < 2:
        raise _fail("spc_too_few_points", "$.subgroups", "need at least 2 subgroups")
    (n,) = sizes
    if n < 2:
        raise _fail(
            "spc_subgroup_size_out_of_range",
            "$.subgroups",
            "subgroups need at least 2 observations; use 'values' with chart imr",
        )
    return chart, np.asarray(req.subgroups, dtype=float), "$.subgroups"


def inspect_quality(request: QualityInspectRequest | Mapping[str, Any]) -> dict[str, Any]:
    """Control chart, run-rule violations and capability for one request body.

    Returns ``{"chart", "center_line", "ucl", "lcl", "points", "sigma_within",
    "dispersion": {"statistic", "center_line", "ucl", "lcl", "points"},
    "violations": [{"rule", "index"}], "cp", "cpk", "pp", "ppk", "sigma_overall",
    "phase1_subgroups", "subgroup_size", "rules", "defect_rate"?, "expected_defect_rate"?,
    "first_pass_yield"?}``; the last three only when a spec limit is given. ``index`` is the
    0-based subgroup (value) index. Violations of the dispersion chart's limits are listed
    with ``"rule": "dispersion_beyond_limits"``.
    """
    req = convert(QualityInspectRequest, request)
    chart, data, path = _data(req)
    if req.usl is not None and req.lsl is not None and req.usl <= req.lsl:
        raise _fail("spc_usl_not_above_lsl", "$.usl", "usl must be greater than lsl")
    count = data.shape[0]
    phase1 = req.phase1_subgroups or count
    if phase1 > count:
        raise _fail(
            "spc_phase1_exceeds_data",
            "$.phase1_subgroups",
            f"phase1_subgroups ({phase1}) exceeds the number of points ({count})",
        )
    if chart == "imr" and phase1 < 3:
        raise _fail("spc_too_few_points", "$.phase1_subgroups", "imr needs >= 3 Phase I values")

    lim = chart_limits(chart, data, phase1)
    violations = evaluate_rules(lim["points"], lim["center_line"], lim["sigma_points"], req.rules)
    disp = lim["dispersion"]
    for i, v in enumerate(disp["points"]):
        if v is not None and (v > disp["ucl"] or (disp["lcl"] > 0 and v < disp["lcl"])):
            violations.append({"rule": "dispersion_beyond_limits", "index": i})
    violations.sort(key=lambda v: (v["index"], v["rule"]))

    phase1_obs = data[:phase1]
    cap = capability(phase1_obs, lim["center_line"], lim["sigma_within"], req.usl, req.lsl)
    out: dict[str, Any] = {
        "chart": chart,
        "center_line": lim["center_line"],
        "ucl": lim["ucl"],
        "lcl": lim["lcl"],
        "points": lim["points"],
        "sigma_within": lim["sigma_within"],
        "dispersion": disp,
        "violations": violations,
        **cap,
        "phase1_subgroups": phase1,
        "subgroup_size": 1 if chart == "imr" else int(data.shape[1]),
        "rules": req.rules,
    }
    if req.usl is not None or req.lsl is not None:
        rate = defect_rate(data, req.usl, req.lsl)
        out["defect_rate"] = rate
        out["first_pass_yield"] = 1.0 - rate
        sigma, mu = lim["sigma_within"], lim["center_line"]
        if sigma > 0:
            expected = 0.0
            if req.usl is not None:
                expected += _normal_tail((req.usl - mu) / sigma)
            if req.lsl is not None:
                expected += _normal_tail((mu - req.lsl) / sigma)
            out["expected_defect_rate"] = expected
    return out
