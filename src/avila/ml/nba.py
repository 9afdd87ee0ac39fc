"""Next best action: eligibility rules, then expected net value = propensity × value − cost.

The standard decisioning arithmetic (e.g. Pega's "propensity × value" prioritisation): for
each customer and each eligible action, expected net value = P(response) × value − cost;
the best positive one wins, otherwise ``"no_action"``. Rules are data — ``(column, operator,
value)`` triples combined with AND — so they can be stored and shown, and every decision
carries a human-readable reason.

Example:

>>> import pandas as pd
>>> customers = pd.DataFrame({"churn_risk": [0.8, 0.1], "ltv": [900, 50]}, index=["c1", "c2"])
>>> actions = [
...     Action("retention_call", value=300, cost=20, rules=[("churn_risk", ">=", 0.5)]),
...     Action("newsletter", value=5, cost=0.1),
... ]
>>> propensity = pd.DataFrame({"retention_call": [0.3, 0.3], "newsletter": [0.05, 0.05]},
...                           index=["c1", "c2"])
>>> NextBestAction(actions).decide(customers, propensity)["action"].tolist()
['retention_call', 'newsletter']
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from avila.errors import ValidationFailed

if TYPE_CHECKING:
    import pandas as pd  # loaded by the first fit or read: the app starts without it

__all__ = ["Action", "NextBestAction"]

_OPERATORS: dict[str, Callable[[pd.Series, Any], pd.Series]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "in": lambda s, v: s.isin(list(v)),
    "not in": lambda s, v: ~s.isin(list(v)),
}


@dataclass(frozen=True)
class Action:
    """An offer or intervention: money in one currency, rules all must hold."""

    name: str
    value: float
    cost: float = 0.0
    rules: Sequence[tuple[str, str, Any]] = field(default_factory=tuple)


class NextBestAction:
    """Choose per customer the eligible action with the highest positive expected net value."""

    def __init__(self, actions: Sequence[Action]) -> None:
        problems = []
        names = [a.name for a in actions]
        if not actions or len(set(names)) != len(names):
            problems.append({"path": "actions", "message": "need distinct, non-empty action names"})
        for a in actions:
            for rule in a.rules:
                if len(rule) != 3 or rule[1] not in _OPERATORS:
                    problems.append(
                        {"path": f"actions.{a.name}.rules", "message": f"bad rule {rule!r}"}
                    )
        if problems:
            raise ValidationFailed(
                "invalid action catalogue", code="nba_invalid_actions", details=problems
            )
        self.actions = list(actions)

    def _eligible(self, action: Action, customers: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        ok = np.ones(len(customers), dtype=bool)
        why = [""] * len(customers)
        for column, op, value in action.rules:
            if column not in customers:
                raise ValidationFailed(
                    f"rule of {action.name!r} uses unknown column {column!r}",
                    code="nba_unknown_column",
                    details=[{"path": column, "message": "missing from customer features"}],
                )
            passed = np.asarray(_OPERATORS[op](customers[column], value), dtype=bool)
            for i in np.flatnonzero(ok & ~passed):
                why[i] = f"{action.name} ineligible ({column} {op} {value!r} fails)"
            ok &= passed
        return ok, why

    def decide(self, customers: pd.DataFrame, propensity: pd.DataFrame) -> pd.DataFrame:
        """One row per customer: ``action``, ``expected_net``, ``propensity``, ``reason``.

        ``propensity`` has one column per action name (P(response) in [0, 1]) and the same
        index as ``customers``.
        """
        import pandas as pd

        missing = [a.name for a in self.actions if a.name not in propensity]
        if missing or not propensity.index.equals(customers.index):
            raise ValidationFailed(
                "propensity needs a column per action and the customers' index",
                code="nba_invalid_propensity",
                details=[{"path": m, "message": "missing propensity column"} for m in missing]
                or [{"path": "index", "message": "does not match customers"}],
            )
        n = len(customers)
        best_net = np.zeros(n)
        best_action = np.array(["no_action"] * n, dtype=object)
        best_p = np.full(n, np.nan)
        reasons: list[list[str]] = [[] for _ in range(n)]
        for action in self.actions:
            p = propensity[action.name].to_numpy(dtype=float)
            if np.any((p < 0) | (p > 1) | np.isnan(p)):
                raise ValidationFailed(
                    "propensities must be probabilities",
                    code="nba_invalid_propensity",
                    details=[{"path": action.name, "message": "outside [0, 1]"}],
                )
            ok, why = self._eligible(action, customers)
            net = p * action.value - action.cost
            for i in range(n):
                if not ok[i]:
                    reasons[i].append(why[i])
                    continue
                reasons[i].append(
                    f"{action.name}: {p[i]:.3f} × {action.value:g} − {action.cost:g} = {net[i]:.2f}"
                )
                if net[i] > best_net[i]:
                    best_net[i], best_action[i], best_p[i] = net[i], action.name, p[i]
        return pd.DataFrame(
            {
                "action": best_action,
                "expected_net": best_net,
                "propensity": best_p,
                "reason": ["; ".join(r) for r in reasons],
            },
            index=customers.index,
        )
