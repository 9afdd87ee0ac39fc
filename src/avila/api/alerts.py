"""``/api/v1/alerts/...``: alert rules (create/delete need ``admin``, reading ``read``) and the
firing history. Thin handlers over :mod:`avila.alerts`; semantics and examples: docs/alerts.md.

The scheduler starts and stops with the app; every committed telemetry batch nudges it, so a
telemetry rule is evaluated right after the reading that may breach it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import delete, get, post
from litestar.params import Parameter

from avila.alerts import AlertRepository, AlertScheduler, Deliverer, RuleSpec, SmtpConfig
from avila.alerts.repository import MAX_HISTORY, public_rule, rfc3339, utc_now
from avila.alerts.rules import (
    BASELINE_WINDOWS,
    AnomalyMetric,
    EmailDestination,
    PreviewSpec,
    breaches,
    check_metric,
    evaluate,
)
from avila.analytics.common import naive_utc
from avila.api.component import AppContext
from avila.errors import NotFound, ValidationFailed
from avila.live.bus import get_bus
from avila.security.keys import Principal
from avila.shared import CHANGES_KEY, LEASES_KEY

PREFIX = "/api/v1/alerts"
TAGS = ["alerts"]
STATE_KEY = "alerts"

Result = dict[str, Any]


def setup(ctx: AppContext) -> None:
    s = ctx.settings
    smtp = SmtpConfig(
        s.smtp_host, s.smtp_port, s.smtp_tls, s.smtp_user, s.smtp_password, s.smtp_from
    )
    deliverer = Deliverer(
        smtp, attempts=s.alerts_delivery_attempts, timeout=s.alerts_delivery_timeout_seconds
    )
    scheduler = AlertScheduler(
        AlertRepository(ctx.store),
        deliverer,
        get_bus(ctx.state),
        s.alerts_interval_seconds,
        changes=ctx.state.get(CHANGES_KEY),
        leases=ctx.state.get(LEASES_KEY),
    )
    ctx.state[STATE_KEY] = scheduler
    i40 = ctx.state.get("industry40")
    listeners = getattr(getattr(i40, "telemetry", None), "listeners", None)
    if isinstance(listeners, list):
        listeners.append(lambda rows: scheduler.nudge())


async def startup(ctx: AppContext) -> None:
    await ctx.state[STATE_KEY].start()


async def shutdown(ctx: AppContext) -> None:
    await ctx.state[STATE_KEY].stop()


DEPENDENCIES = {"alerts": lambda state: state[STATE_KEY]}


def _check(scheduler: AlertScheduler, spec: RuleSpec) -> None:
    check_metric(scheduler.repository.store, spec.metric)
    for i, destination in enumerate(spec.destinations):
        if isinstance(destination, EmailDestination) and not scheduler.deliverer.smtp.host:
            path = f"destinations[{i}]"
            message = "email destinations need an SMTP server: set AVILA_SMTP_HOST"
            raise ValidationFailed(
                message, code="smtp_not_configured", details=[{"path": path, "message": message}]
            )


@post(
    f"{PREFIX}/rules",
    opt={"scope": "admin"},
    status_code=201,
    summary="Create an alert rule",
    description=(
        'Body `{"name", "metric": {"kind": "event_count"|"conversion_rate"|"telemetry"|'
        '"anomaly", ...}, "condition": {"op", "threshold"}, "window_seconds",'
        ' "cooldown_seconds"?, "destinations": [...]}` (docs/alerts.md). 201 with the rule;'
        " secrets are never returned."
    ),
    tags=TAGS,
)
async def create_rule(data: RuleSpec, principal: Principal, alerts: AlertScheduler) -> Result:
    if data.cooldown_seconds is None:
        data = msgspec.structs.replace(data, cooldown_seconds=data.window_seconds)
    await asyncio.to_thread(_check, alerts, data)
    return public_rule(await alerts.add_rule(principal.project_id, data))


@get(
    f"{PREFIX}/rules",
    opt={"scope": "read"},
    summary="List alert rules",
    description="The project's rules, oldest first, without secrets.",
    tags=TAGS,
)
async def list_rules(principal: Principal, alerts: AlertScheduler) -> Result:
    return {"rules": [public_rule(r) for r in alerts.project_rules(principal.project_id)]}


def _rule(alerts: AlertScheduler, project_id: str, rule_id: str) -> Any:
    rule = alerts.rules.get(rule_id)
    if rule is None or rule.project_id != project_id:
        raise NotFound(f"no alert rule {rule_id!r} in this project", code="alert_rule_not_found")
    return rule


@get(
    f"{PREFIX}/rules/{{rule_id:str}}",
    opt={"scope": "read"},
    summary="One alert rule",
    tags=TAGS,
)
async def get_rule(rule_id: str, principal: Principal, alerts: AlertScheduler) -> Result:
    return public_rule(_rule(alerts, principal.project_id, rule_id))


@delete(
    f"{PREFIX}/rules/{{rule_id:str}}",
    opt={"scope": "admin"},
    status_code=200,
    summary="Delete an alert rule",
    description="The rule stops firing at once; its history is kept.",
    tags=TAGS,
)
async def delete_rule(rule_id: str, principal: Principal, alerts: AlertScheduler) -> Result:
    _rule(alerts, principal.project_id, rule_id)
    await alerts.delete_rule(principal.project_id, rule_id)
    return {"id": rule_id, "deleted": True}


@get(
    f"{PREFIX}/history",
    opt={"scope": "read"},
    summary="Alert firings",
    description=(
        "Firings of the project, newest first, each with per-destination delivery `status`"
        " (`pending` | `delivered` | `failed`), `attempts` and the last `error`."
    ),
    tags=TAGS,
)
async def history(
    principal: Principal,
    alerts: AlertScheduler,
    rule_id: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_HISTORY)] = 100,
) -> Result:
    firings = await asyncio.to_thread(
        alerts.repository.history, principal.project_id, rule_id, limit
    )
    return {"firings": firings}


def _window_end(data: PreviewSpec) -> datetime:
    """``at`` as naive UTC (default now); a 422 at ``at`` when the data the metric reads (the
    window, or an anomaly score's baseline windows too) would begin before year 1."""
    windows = BASELINE_WINDOWS + 1 if isinstance(data.metric, AnomalyMetric) else 1
    try:
        at = utc_now() if data.at is None else naive_utc(data.at)
        at - timedelta(seconds=data.window_seconds * windows)
    except OverflowError:
        message = "the window would begin before year 1: choose a later `at`"
        raise ValidationFailed(message, details=[{"path": "at", "message": message}]) from None
    return at


@post(
    f"{PREFIX}/evaluate",
    opt={"scope": "read"},
    status_code=200,
    summary="Evaluate a metric now",
    description=(
        'Body `{"metric", "window_seconds", "condition"?, "at"?}`: the metric\'s value over the'
        " window ending now (or at `at`), and whether `condition` would breach. Nothing is stored"
        " or sent: use it to try a rule before creating it."
    ),
    tags=TAGS,
)
async def evaluate_metric(
    data: PreviewSpec, principal: Principal, alerts: AlertScheduler
) -> Result:
    store = alerts.repository.store
    at = _window_end(data)

    def run() -> float | None:
        check_metric(store, data.metric)
        return evaluate(store, principal.project_id, data.metric, data.window_seconds, at)

    value = await asyncio.to_thread(run)
    return {
        "value": value,
        "breached": None if data.condition is None else breaches(data.condition, value),
        "window_start": rfc3339(at - timedelta(seconds=data.window_seconds)),
        "window_end": rfc3339(at),
    }


ROUTES = [create_rule, list_rules, get_rule, delete_rule, history, evaluate_metric]
