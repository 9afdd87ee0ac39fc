"""The statistics of an experiment's results, from per-variant sufficient statistics.

Written out with their assumptions in docs/experiments.md. Each function takes counts (or
means and variances), never raw rows, so the store does the heavy lifting; each returns
``None`` where the statistic is undefined (no users, no variance) rather than a NaN.

- :func:`wilson_interval`: the Wilson score interval of a proportion (as statsmodels'
  ``proportion_confint(method="wilson")``).
- :func:`two_proportion_z`: the pooled two-proportion z-test (as statsmodels'
  ``proportions_ztest``), two-sided.
- :func:`welch_t`: Welch's unequal-variance t-test (as ``scipy.stats.ttest_ind(equal_var=False)``),
  two-sided, with the Welch-Satterthwaite degrees of freedom.
- :func:`srm_p_value`: Pearson's chi-square goodness of fit of the exposed counts to the
  assignment's shares (sample-ratio mismatch).
- :func:`probability_best_beta` / :func:`probability_best_normal`: the posterior probability
  that each variant has the highest rate (Beta(1 + converted, 1 + exposed - converted)
  posteriors) or mean (normal approximation), by numerical integration of
  ``P(i best) = integral f_i(x) prod_{j != i} F_j(x) dx`` rather than Monte Carlo, so the
  answer is exact to ~1e-8 and needs no seed.

The formulas are ours (a few lines each) so that the tests can hold them against the
independent implementations in statsmodels and scipy; scipy provides the distributions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

#: Two-sided 95 % normal quantile: ``scipy.stats.norm.isf(0.025)`` to the last bit (a test
#: holds it), written out so that importing this module does not import SciPy (~1 s of a
#: server's start).
Z_95 = 1.9599639845400545


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float
    df: float | None = None


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / trials`` (None without trials)."""
    if trials <= 0:
        return None
    p = successes / trials
    z2 = z * z
    denom = 1 + z2 / trials
    center = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def normal_interval(mean: float, variance: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """``mean +- z * sqrt(variance / n)`` (the CLT interval of a mean)."""
    half = z * math.sqrt(max(variance, 0.0) / n) if n > 0 else math.inf
    return mean - half, mean + half


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> TestResult | None:
    """Pooled z-test of ``x1/n1 - x2/n2 = 0``, two-sided. None when a group is empty or the
    pooled rate is 0 or 1 (no variance: the test is undefined)."""
    from scipy.stats import norm

    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return None
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return TestResult(z, float(2 * norm.sf(abs(z))))


def welch_t(
    n1: int, mean1: float, var1: float, n2: int, mean2: float, var2: float
) -> TestResult | None:
    """Welch's t-test of ``mean1 - mean2 = 0`` from sample sizes, means and sample variances
    (ddof=1), two-sided. None with fewer than 2 users in a group or zero variance in both."""
    from scipy.stats import t as student_t

    if n1 < 2 or n2 < 2:
        return None
    vn1, vn2 = var1 / n1, var2 / n2
    if vn1 + vn2 <= 0:
        return None
    t = (mean1 - mean2) / math.sqrt(vn1 + vn2)
    df = (vn1 + vn2) ** 2 / (vn1**2 / (n1 - 1) + vn2**2 / (n2 - 1))
    return TestResult(t, float(2 * student_t.sf(abs(t), df)), df)


def srm_p_value(observed: Sequence[int], shares: Sequence[float]) -> float | None:
    """Chi-square goodness of fit of ``observed`` counts to the expected ``shares`` (summing
    to 1), k - 1 degrees of freedom. None without users."""
    from scipy.stats import chi2

    total = sum(observed)
    if total <= 0:
        return None
    stat = sum((o - total * s) ** 2 / (total * s) for o, s in zip(observed, shares, strict=True))
    return float(chi2.sf(stat, len(observed) - 1))


Density = Callable[[float], float]


def _probability_best(
    pdfs: Sequence[Density],
    cdfs: Sequence[Density],
    supports: Sequence[tuple[float, float]],
    centres: Sequence[float],
) -> list[float]:
    """``P(i best)`` from each variant's density and distribution function; each integral runs
    over the support of ``f_i`` (where all its mass is), broken at every variant's centre and
    support ends: a narrow variant's ``F_j`` steps from 0 to 1 inside its support, a feature
    the quadrature of a wide ``f_i`` misses unless the step is an interval of its own."""
    from scipy import integrate

    marks = sorted({*centres, *(end for support in supports for end in support)})
    out = []
    for i, (lo, hi) in enumerate(supports):
        pdf_i = pdfs[i]
        others = [cdf for j, cdf in enumerate(cdfs) if j != i]

        def integrand(x: float, pdf_i: Density = pdf_i, others: list[Density] = others) -> float:
            value = pdf_i(x)
            for cdf in others:
                if value == 0.0:
                    break
                value *= cdf(x)
            return value

        # Break points inside (lo, hi), none so close to another that the piece between them
        # is a few floating-point numbers wide (quad reports "bad integrand behaviour" then).
        gap = max((hi - lo) * 1e-9, 1e6 * math.ulp(max(abs(lo), abs(hi))))
        points: list[float] = []
        for mark in marks:
            if lo + gap < mark < hi - gap and (not points or mark - points[-1] > gap):
                points.append(mark)
        value, _ = integrate.quad(
            integrand, lo, hi, points=points or None, limit=500, epsabs=1e-11, epsrel=1e-9
        )
        out.append(max(0.0, value))
    total = sum(out)
    # The integrals sum to 1 up to quadrature error; normalise that away.
    return [v / total for v in out] if total > 0 else [1 / len(out)] * len(out)


_TAIL = 1e-12
_SQRT_2PI = math.sqrt(2 * math.pi)


def _beta_pdf(a: float, b: float) -> Density:
    from scipy import special

    log_norm = float(special.betaln(a, b))

    def pdf(x: float) -> float:
        if x <= 0.0 or x >= 1.0:
            return 0.0
        return math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - log_norm)

    return pdf


def probability_best_beta(successes: Sequence[int], trials: Sequence[int]) -> list[float]:
    """Posterior probability that each variant's conversion rate is the highest, with a
    uniform Beta(1, 1) prior: rate_i ~ Beta(1 + successes_i, 1 + trials_i - successes_i)."""
    from scipy import special
    from scipy.stats import beta

    params = [(1.0 + s, 1.0 + n - s) for s, n in zip(successes, trials, strict=True)]
    pdfs = [_beta_pdf(a, b) for a, b in params]
    cdfs: list[Density] = [partial(special.betainc, a, b) for a, b in params]
    supports = [(float(beta.ppf(_TAIL, a, b)), float(beta.isf(_TAIL, a, b))) for a, b in params]
    centres = [a / (a + b) for a, b in params]
    return _probability_best(pdfs, cdfs, supports, centres)


def _normal_pdf(mean: float, se: float) -> Density:
    def pdf(x: float) -> float:
        return math.exp(-0.5 * ((x - mean) / se) ** 2) / (se * _SQRT_2PI)

    return pdf


def _normal_cdf(mean: float, se: float) -> Density:
    from scipy import special

    def cdf(x: float) -> float:
        return float(special.ndtr((x - mean) / se))

    return cdf


def probability_best_normal(
    means: Sequence[float], standard_errors: Sequence[float]
) -> list[float] | None:
    """Probability that each variant's mean is the highest, with mean_i ~ Normal(mean, se^2)
    (a flat prior and the CLT). None when a standard error is zero or undefined."""
    from scipy.stats import norm

    if any(not se > 0 for se in standard_errors):
        return None
    pairs = list(zip(means, standard_errors, strict=True))
    pdfs = [_normal_pdf(m, se) for m, se in pairs]
    cdfs = [_normal_cdf(m, se) for m, se in pairs]
    z = float(norm.isf(_TAIL))
    supports = [(m - z * se, m + z * se) for m, se in pairs]
    return _probability_best(pdfs, cdfs, supports, list(means))
