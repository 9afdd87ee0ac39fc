"""Run rules for control charts: Nelson (1984) rules 1–8 and the Western Electric rules.

Lloyd S. Nelson, "The Shewhart Control Chart — Tests for Special Causes", *Journal of Quality
Technology* 16(4), 1984; Western Electric, *Statistical Quality Control Handbook* (1956). As
fixed in ``shared/REFERENCES.md`` (σ is the standard deviation of the plotted statistic,
i.e. (UCL − CL) / 3):

1. one point beyond 3σ
2. 9 points in a row on one side of the center line
3. 6 points in a row steadily increasing or decreasing
4. 14 points in a row alternating up and down
5. 2 of 3 points in a row beyond 2σ, same side
6. 4 of 5 points in a row beyond 1σ, same side
7. 15 points in a row within 1σ (either side)
8. 8 points in a row beyond 1σ (either side)

Western Electric rules are Nelson 1, 5 and 6 plus "8 in a row on one side" (reported as
``western_electric_1`` … ``western_electric_4``).

**Which index is flagged.** A violation is reported at the index of the point that completes
the pattern; a longer run keeps flagging each further point (a run of 10 on one side flags
indices 8 and 9 under rule 2). For the "k of m" rules (5, 6) the flagged point must itself be
beyond the zone, so a lone normal point after two outliers is not flagged. A point exactly on
the center line breaks a one-side run; equal neighbours break a trend and an alternation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["NELSON_RULES", "WESTERN_ELECTRIC_RULES", "evaluate_rules"]

Rule = Callable[[np.ndarray, float, float], np.ndarray]


def _run_ending(mask: np.ndarray, length: int) -> np.ndarray:
    """True at i when mask[i-length+1 .. i] are all True."""
    out = np.zeros(mask.shape, dtype=bool)
    run = 0
    for i, m in enumerate(mask):
        run = run + 1 if m else 0
        out[i] = run >= length
    return out


def _k_of_m(beyond: np.ndarray, k: int, m: int) -> np.ndarray:
    counts = np.convolve(beyond.astype(int), np.ones(m, dtype=int))[: len(beyond)]
    return beyond & (counts >= k)


def rule1(x: np.ndarray, cl: float, sigma: float) -> np.ndarray:
    return np.asarray(np.abs(x - cl) > 3 * sigma, dtype=bool)


def rule2(x: np.ndarray, cl: float, sigma: float) -> np.ndarray:
    return np.asarray(_run_ending(x > cl, 9) | _run_ending(x < cl, 9), dtype=bool)


def rule3(x: np.ndarray, cl: float, sigma: float) -> np.ndarray:
    d = np.diff(x)
    up = np.concatenate([[False], _run_ending(d > 0, 5)])
    down = np.concatenate([[False], _run_ending(d < 0, 5)])
    return np.asarray(up | down, dtype=bool)


def rule4(x: np.ndarray, cl: float, sigma: float) -> np.ndarray:
    s = np.sign(np.diff(x))
    alternating = (s[1:] * s[:-1]) < 0  # diff i and i+1 have opposite signs
    return np.concatenate([[False, False], _run_ending(alternating, 12)])


def rule5(x: np.ndarray, cl: float, sigma: float) -> np.ndarray:
    return np.asarray(
        _k_of_m(x > cl + 2 * sigma, 2, 3) | _k_of_m(x < cl - 2 * sigma, 2, 3), dtype=bool
    )


def rule6(x: np.ndarray, cl: float, sigma: float) -> np.ndarray:
    return np.asarray(_k_of_m(x > cl + sigma, 4, 5) | _k_of_m(x < cl - sigma, 4, 5), dtype=bool)


def rule7(x: np.ndarray, cl: float, sigma: float) -> np.ndarray:
    return _run_ending(np.abs(x - cl) < sigma, 15)


def rule8(x: np.ndarray, cl: float, sigma: float) -> np.ndarray:
    return _run_ending(np.abs(x - cl) > sigma, 8)


def _eight_one_side(x: np.ndarray, cl: float, sigma: float) -> np.ndarray:
    return np.asarray(_run_ending(x > cl, 8) | _run_ending(x < cl, 8), dtype=bool)


NELSON_RULES: dict[str, Rule] = {
    "nelson_1": rule1,
    "nelson_2": rule2,
    "nelson_3": rule3,
    "nelson_4": rule4,
    "nelson_5": rule5,
    "nelson_6": rule6,
    "nelson_7": rule7,
    "nelson_8": rule8,
}

WESTERN_ELECTRIC_RULES: dict[str, Rule] = {
    "western_electric_1": rule1,
    "western_electric_2": rule5,
    "western_electric_3": rule6,
    "western_electric_4": _eight_one_side,
}

RULE_SETS: dict[str, dict[str, Rule]] = {
    "nelson": NELSON_RULES,
    "western_electric": WESTERN_ELECTRIC_RULES,
}


def evaluate_rules(
    points: Sequence[float] | np.ndarray,
    center_line: float,
    sigma: float,
    rules: str = "nelson",
) -> list[dict[str, object]]:
    """Violations of a rule set (``"nelson"`` or ``"western_electric"``) as
    ``[{"rule": "nelson_1", "index": 0-based point index}, ...]`` sorted by index, then rule.

    With ``sigma == 0`` (a constant process) only points off the center line violate rule 1,
    and the zone rules are not evaluated.
    """
    x = np.asarray(points, dtype=float)
    found: list[dict[str, object]] = []
    for name, rule in RULE_SETS[rules].items():
        if sigma <= 0 and rule is not rule1:
            continue
        for i in np.flatnonzero(rule(x, center_line, sigma)):
            found.append({"rule": name, "index": int(i)})
    found.sort(key=lambda v: (int(str(v["index"])), str(v["rule"])))
    return found
