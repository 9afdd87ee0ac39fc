"""Customer lifetime value: BG/NBD for purchase counts, Gamma-Gamma for spend.

* BG/NBD — Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way: An Alternative
  to the Pareto/NBD Model", *Marketing Science* 24(2). Equation numbers below refer to it.
* Gamma-Gamma — Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for Customer
  Base Analysis", *JMR* 42(4), and Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary
  Value" (note).

Inputs are the per-customer summary of the calibration period, in one time unit of the
caller's choice (the published CDNOW figures use weeks):

* ``frequency`` (x): number of *repeat* purchases (distinct purchase periods minus one);
* ``recency`` (t_x): time from the first to the last purchase (0 when x = 0);
* ``T``: time from the first purchase to the end of the calibration period;
* ``monetary_value``: mean value of the repeat purchases (Gamma-Gamma only, x > 0).

On the CDNOW calibration data (2,357 customers, 39 weeks) the fitted BG/NBD reproduces the
published r = 0.243, α = 4.414, a = 0.793, b = 2.426, LL = −9582.4, and Gamma-Gamma on the 946
repeat buyers p = 6.25, q = 3.74, γ = 15.44 (see ``tests/ml/test_clv.py``).

Example:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.poisson(2.0, 200).astype(float)
>>> T = np.full(200, 30.0)
>>> t_x = np.where(x > 0, rng.uniform(1, 30, 200), 0.0)
>>> model = BetaGeoModel().fit(x, t_x, T)
>>> sorted(model.params_)
['a', 'alpha', 'b', 'r']
>>> bool(np.all((model.probability_alive(x, t_x, T) > 0) & (model.probability_alive(x, t_x, T) <= 1)))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from avila.errors import ValidationFailed
from avila.ml._checks import as_float_array, require_fitted, same_length

if TYPE_CHECKING:
    import pandas as pd  # loaded by the first fit or read: the app starts without it

__all__ = [
    "BetaGeoModel",
    "GammaGammaModel",
    "customer_lifetime_value",
    "summarise_transactions",
]

_CODE = "clv_invalid_summary"


@dataclass(frozen=True)
class _Summary:
    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray


def _summary(frequency: Any, recency: Any, T: Any) -> _Summary:
    x = as_float_array(frequency, "frequency", code=_CODE)
    t_x = as_float_array(recency, "recency", code=_CODE)
    big_t = as_float_array(T, "T", code=_CODE)
    same_length([x, t_x, big_t], ["frequency", "recency", "T"], code=_CODE)
    problems: list[dict[str, str]] = []
    if np.any(x < 0) or np.any(x != np.round(x)):
        problems.append({"path": "frequency", "message": "must be non-negative integers"})
    if np.any(t_x < 0):
        problems.append({"path": "recency", "message": "must be >= 0"})
    if np.any(t_x > big_t + 1e-9):
        problems.append({"path": "recency", "message": "must not exceed T"})
    if np.any(big_t <= 0):
        problems.append({"path": "T", "message": "must be > 0"})
    if np.any((x == 0) & (t_x != 0)):
        problems.append({"path": "recency", "message": "must be 0 when frequency is 0"})
    if problems:
        raise ValidationFailed("invalid customer summary", code=_CODE, details=problems)
    return _Summary(x, t_x, big_t)


def _bgnbd_loglik(params: np.ndarray, s: _Summary) -> np.ndarray:
    """Per-customer log-likelihood, FHL (2005) eq. 6 written in logs for stability."""
    from scipy import special

    r, alpha, a, b = params
    x, t_x, big_t = s.x, s.t_x, s.T
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = (
        special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
    )
    a3 = -(r + x) * np.log(alpha + big_t)
    repeat = x > 0
    # The x > 0 term; b + x - 1 > 0 there, and -inf (exp -> 0) for x = 0.
    a4 = np.full_like(x, -np.inf)
    a4[repeat] = (
        np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    )
    return np.asarray(a1 + a2 + np.logaddexp(a3, a4), dtype=float)


class BetaGeoModel:
    """BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005), fitted by maximum likelihood.

    While alive a customer buys as a Poisson process with rate λ ~ Gamma(r, α); after each
    purchase they drop out with probability p ~ Beta(a, b).

    Parameters
    ----------
    penalizer:
        L2 penalty on the parameters (0 reproduces the paper). A small value (e.g. 0.001)
        stabilises fits on tiny or degenerate data.
    min_customers:
        Fewer customers than this raise ``ValidationFailed(code="clv_too_few_customers")``.
    """

    def __init__(self, penalizer: float = 0.0, min_customers: int = 20) -> None:
        self.penalizer = penalizer
        self.min_customers = min_customers
        self.params_: dict[str, float] | None = None
        self.log_likelihood_: float | None = None
        self.n_customers_: int | None = None

    def fit(self, frequency: Any, recency: Any, T: Any) -> BetaGeoModel:
        """Maximise the summed per-customer log-likelihood (FHL 2005 eq. 6) over r, α, a, b."""
        from scipy import optimize

        s = _summary(frequency, recency, T)
        if len(s.x) < self.min_customers or not np.any(s.x > 0):
            raise ValidationFailed(
                f"BG/NBD needs at least {self.min_customers} customers, some with repeat purchases",
                code="clv_too_few_customers",
                details=[
                    {
                        "path": "frequency",
                        "message": f"{len(s.x)} customers, {int(np.sum(s.x > 0))} repeat buyers",
                    }
                ],
            )
        # Rescale time so that alpha starts near 1; undone afterwards (alpha is a time scale).
        scale = 10.0 / float(np.max(s.T))
        scaled = _Summary(s.x, s.t_x * scale, s.T * scale)

        def objective(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            ll = float(np.sum(_bgnbd_loglik(params, scaled)))
            penalty = self.penalizer * float(np.sum(params**2))
            return -ll / len(s.x) + penalty

        result = optimize.minimize(
            objective,
            x0=np.zeros(4),
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 20_000, "maxfev": 20_000},
        )
        result = optimize.minimize(objective, x0=result.x, method="BFGS", options={"gtol": 1e-9})
        r, alpha, a, b = np.exp(result.x)
        alpha /= scale
        self.params_ = {"r": float(r), "alpha": float(alpha), "a": float(a), "b": float(b)}
        self.log_likelihood_ = float(np.sum(self.log_likelihood(s.x, s.t_x, s.T)))
        self.n_customers_ = len(s.x)
        return self

    def _params(self) -> tuple[float, float, float, float]:
        require_fitted(self, "params_")
        assert self.params_ is not None
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def log_likelihood(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Per-customer log-likelihood under the fitted parameters."""
        s = _summary(frequency, recency, T)
        return _bgnbd_loglik(np.array(self._params()), s)

    def score(self, frequency: Any, recency: Any, T: Any) -> float:
        """Mean per-customer log-likelihood (higher is better)."""
        return float(np.mean(self.log_likelihood(frequency, recency, T)))

    def expected_purchases(self, t: Any) -> np.ndarray:
        """E[X(t)]: purchases a *new* customer makes in (0, t] (FHL 2005 eq. 9)."""
        from scipy import special

        r, alpha, a, b = self._params()
        t = np.asarray(t, dtype=float)
        z = t / (alpha + t)
        hyp = special.hyp2f1(r, b, a + b - 1, z)
        return np.asarray(
            (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp), dtype=float
        )

    def probability_alive(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(alive | x, t_x, T) at the end of calibration (FHL 2005 eq. 11 denominator).

        Customers with no repeat purchase are alive with probability 1 under BG/NBD.
        """
        r, alpha, a, b = self._params()
        s = _summary(frequency, recency, T)
        return 1.0 / (1.0 + self._odds_dead(s, r, alpha, a, b))

    def probability_no_purchase(self, t: float, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(no purchase in (T, T + t] | x, t_x, T) (Fader & Hardie 2019, note 039, eq. 34).

        ``(1 − P(alive)) + P(alive) · ((α + T) / (α + T + t))^(r + x)``: a customer who has
        dropped out never buys again; one still alive at T has purchase rate λ with posterior
        Gamma(r + x, α + T), and makes no purchase in t with probability E[e^(−λt)], the
        Gamma's Laplace transform. Dropping out happens only right after a purchase, so a
        customer with no purchase in the window cannot leave within it. ``1 −`` this is the
        probability of at least one purchase, the "returns within the horizon" of a churn label.
        """
        if not np.isfinite(t) or t < 0:
            raise ValidationFailed(
                "the horizon t must be a finite number >= 0",
                code=_CODE,
                details=[{"path": "t", "message": str(t)}],
            )
        r, alpha, a, b = self._params()
        s = _summary(frequency, recency, T)
        alive = 1.0 / (1.0 + self._odds_dead(s, r, alpha, a, b))
        stays_silent = np.exp((r + s.x) * (np.log(alpha + s.T) - np.log(alpha + s.T + t)))
        return np.asarray((1.0 - alive) + alive * stays_silent, dtype=float)

    @staticmethod
    def _odds_dead(s: _Summary, r: float, alpha: float, a: float, b: float) -> np.ndarray:
        odds = np.zeros_like(s.x)
        rep = s.x > 0
        xr = s.x[rep]
        log_ratio = (r + xr) * (np.log(alpha + s.T[rep]) - np.log(alpha + s.t_x[rep]))
        odds[rep] = a / (b + xr - 1) * np.exp(log_ratio)
        return odds

    def predict(self, t: float, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` time units (FHL 2005 eq. 10)."""
        from scipy import special

        r, alpha, a, b = self._params()
        s = _summary(frequency, recency, T)
        x = s.x
        head = (a + b + x - 1) / (a - 1)
        z = t / (alpha + s.T + t)
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
        body = 1 - ((alpha + s.T) / (alpha + s.T + t)) ** (r + x) * hyp
        return np.asarray(head * body / (1 + self._odds_dead(s, r, alpha, a, b)), dtype=float)


def _gg_loglik(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood of mean spend m over x transactions (Fader & Hardie 2013)."""
    from scipy import special

    p, q, v = params
    px = p * x
    loglik: np.ndarray = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(v + m * x)
    )
    return loglik


class GammaGammaModel:
    """Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005; Fader & Hardie 2013).

    Spend per transaction ~ Gamma(p, ν) with ν ~ Gamma(q, γ) across customers; assumes spend
    is independent of purchase frequency. Only customers with ``frequency > 0`` enter the fit.
    """

    def __init__(self, penalizer: float = 0.0, min_customers: int = 10) -> None:
        self.penalizer = penalizer
        self.min_customers = min_customers
        self.params_: dict[str, float] | None = None
        self.log_likelihood_: float | None = None
        self.n_customers_: int | None = None

    @staticmethod
    def _inputs(frequency: Any, monetary_value: Any) -> tuple[np.ndarray, np.ndarray]:
        code = "clv_invalid_monetary"
        x = as_float_array(frequency, "frequency", code=code)
        m = as_float_array(monetary_value, "monetary_value", code=code)
        same_length([x, m], ["frequency", "monetary_value"], code=code)
        if np.any(x < 0) or np.any((x > 0) & (m <= 0)):
            raise ValidationFailed(
                "frequency must be >= 0 and monetary_value > 0 for repeat buyers",
                code=code,
                details=[{"path": "monetary_value", "message": "non-positive spend"}],
            )
        return x, m

    def fit(self, frequency: Any, monetary_value: Any) -> GammaGammaModel:
        """Maximum likelihood over p, q, γ on the repeat buyers (``frequency > 0``)."""
        from scipy import optimize

        x, m = self._inputs(frequency, monetary_value)
        keep = x > 0
        x, m = x[keep], m[keep]
        if len(x) < self.min_customers:
            raise ValidationFailed(
                f"Gamma-Gamma needs at least {self.min_customers} repeat buyers",
                code="clv_too_few_repeat_buyers",
                details=[{"path": "frequency", "message": f"{len(x)} repeat buyers"}],
            )
        scale = float(np.mean(m))

        def objective(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            ll = float(np.sum(_gg_loglik(params, x, m / scale)))
            return -ll / len(x) + self.penalizer * float(np.sum(params**2))

        result = optimize.minimize(
            objective,
            x0=np.zeros(3),
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 20_000, "maxfev": 20_000},
        )
        result = optimize.minimize(objective, x0=result.x, method="BFGS", options={"gtol": 1e-9})
        p, q, v = np.exp(result.x)
        self.params_ = {"p": float(p), "q": float(q), "gamma": float(v * scale)}
        params = np.array([p, q, v * scale])
        self.log_likelihood_ = float(np.sum(_gg_loglik(params, x, m)))
        self.n_customers_ = len(x)
        return self

    def predict(self, frequency: Any, monetary_value: Any) -> np.ndarray:
        """E[M | p, q, γ, m_x, x]: expected spend per future transaction.

        A weighted mean of the population mean ``pγ/(q−1)`` and the customer's own mean;
        customers without repeat purchases get the population mean.
        """
        require_fitted(self, "params_")
        assert self.params_ is not None
        p, q, v = self.params_["p"], self.params_["q"], self.params_["gamma"]
        x, m = self._inputs(frequency, monetary_value)
        m = np.where(x > 0, m, 0.0)
        return np.asarray(p * (v + m * x) / (p * x + q - 1), dtype=float)


def customer_lifetime_value(
    transactions: BetaGeoModel,
    spend: GammaGammaModel,
    frequency: Any,
    recency: Any,
    T: Any,
    monetary_value: Any,
    *,
    periods: int = 12,
    period_length: float = 1.0,
    discount_rate: float = 0.01,
    margin: float = 1.0,
) -> np.ndarray:
    """Discounted expected value of each customer's next ``periods`` periods.

    ``Σ_{i=1..periods} margin · E[M] · (E[Y(i·L)] − E[Y((i−1)·L)]) / (1 + d)^i`` with L =
    ``period_length`` in the BG/NBD time unit (e.g. 4.35 when fitted in weeks and the periods
    are months) and d = ``discount_rate`` per period. Money is in the unit of ``monetary_value``.
    """
    if periods < 1 or period_length <= 0 or discount_rate < 0:
        raise ValidationFailed(
            "periods >= 1, period_length > 0 and discount_rate >= 0 are required",
            code="clv_invalid_horizon",
            details=[
                {"path": "periods", "message": str(periods)},
                {"path": "period_length", "message": str(period_length)},
                {"path": "discount_rate", "message": str(discount_rate)},
            ],
        )
    value = spend.predict(frequency, monetary_value) * margin
    total = np.zeros_like(value)
    previous = np.zeros_like(value)
    for i in range(1, periods + 1):
        cumulative = transactions.predict(i * period_length, frequency, recency, T)
        total += value * (cumulative - previous) / (1 + discount_rate) ** i
        previous = cumulative
    return total


def summarise_transactions(
    transactions: pd.DataFrame,
    *,
    customer_col: str = "customer_id",
    time_col: str = "timestamp",
    value_col: str | None = "value",
    observation_end: Any = None,
    unit_days: float = 7.0,
) -> pd.DataFrame:
    """Per-customer (frequency, recency, T[, monetary_value]) from a transaction log.

    Purchases on the same UTC day count as one purchase, as in FHL (2005). Times are in units
    of ``unit_days`` days (7 = weeks, matching the published CDNOW figures). ``monetary_value``
    is the mean daily spend over the *repeat* purchase days (0 when there are none), as the
    Gamma-Gamma model expects. ``observation_end`` defaults to the last transaction.
    Returns a frame indexed by customer id.
    """
    import pandas as pd

    missing = [c for c in (customer_col, time_col, value_col) if c and c not in transactions]
    if missing:
        raise ValidationFailed(
            "transaction log lacks required columns",
            code="clv_invalid_transactions",
            details=[{"path": c, "message": "missing column"} for c in missing],
        )
    if transactions.empty:
        raise ValidationFailed(
            "transaction log is empty",
            code="clv_invalid_transactions",
            details=[{"path": time_col, "message": "no rows"}],
        )
    ts = pd.to_datetime(transactions[time_col], utc=True)
    end = ts.max() if observation_end is None else pd.Timestamp(observation_end)
    if end.tzinfo is None:
        end = end.tz_localize("UTC")
    frame = pd.DataFrame(
        {
            "customer": transactions[customer_col].to_numpy(),
            "day": ts.dt.floor("D").to_numpy(),
            "value": transactions[value_col].to_numpy(dtype=float) if value_col else 0.0,
        }
    )
    frame = frame[(ts <= end).to_numpy()]
    daily = frame.groupby(["customer", "day"], sort=True)["value"].sum().reset_index()
    unit = pd.Timedelta(days=unit_days)
    grouped = daily.groupby("customer", sort=True)
    first = grouped["day"].min()
    last = grouped["day"].max()
    first_value = grouped["value"].first()
    out = pd.DataFrame(
        {
            "frequency": grouped.size() - 1,
            "recency": (last - first) / unit,
            "T": (end.floor("D") - first) / unit,
        }
    )
    if value_col:
        repeat_total = grouped["value"].sum() - first_value
        out["monetary_value"] = np.where(
            out["frequency"] > 0, repeat_total / out["frequency"].clip(lower=1), 0.0
        )
    out.index.name = customer_col
    return out
