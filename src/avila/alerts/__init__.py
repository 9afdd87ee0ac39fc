"""Alerts: rules on event counts, conversion, telemetry and anomaly scores, evaluated on a short
schedule, delivered to webhooks, Slack and email with retries, recorded in a history.

Semantics and examples: docs/alerts.md.
"""

from avila.alerts.delivery import Deliverer
from avila.alerts.destinations import SmtpConfig
from avila.alerts.repository import AlertRepository, Firing, public_rule
from avila.alerts.rules import Rule, RuleSpec, evaluate
from avila.alerts.scheduler import AlertScheduler

__all__ = [
    "AlertRepository",
    "AlertScheduler",
    "Deliverer",
    "Firing",
    "Rule",
    "RuleSpec",
    "SmtpConfig",
    "evaluate",
    "public_rule",
]
