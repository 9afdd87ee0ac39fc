"""Threshold alarms per device type, published on the live bus's ``alerts`` channel.

A project configures, per device type, rules ``{"metric", "max"?, "min"?, "severity"}``
(``severity`` ``warning`` | ``critical``; default ``warning``). Every committed reading of a
device of that type is checked; an alarm is *raised* when a value leaves [min, max] and *cleared*
when a later reading is back inside, so a stuck sensor raises one alert, not one per reading.
Alert payload::

    {"type": "threshold_alarm", "state": "raised"|"cleared", "device_id", "device_type",
     "metric", "value", "limit", "bound": "max"|"min", "severity", "timestamp"}

Rules are stored in ``alarm_rules`` (one JSON document per project and device type). Active
alarms live in memory: after a restart an alarm still in breach is raised again by its next
reading. The same rules give predictive maintenance its failure thresholds (see
:mod:`avila.industry40.records`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from avila.errors import ValidationFailed
from avila.industry40.devices import DeviceRegistry, rfc3339
from avila.industry40.telemetry import MetricName, TelemetryRows
from avila.live.bus import LiveBus
from avila.storage.base import Store

log = logging.getLogger("avila.industry40")


class AlarmRule(Struct, kw_only=True):
    metric: MetricName
    max: float | None = None
    min: float | None = None
    severity: Literal["warning", "critical"] = "warning"


class AlarmRules(Struct, kw_only=True):
    rules: Annotated[list[AlarmRule], Meta(max_length=200)]


def check_rules(rules: AlarmRules) -> None:
    for i, rule in enumerate(rules.rules):
        if rule.max is None and rule.min is None:
            raise ValidationFailed(
                f"rule for {rule.metric!r} needs max and/or min",
                code="alarm_rule_without_limit",
                details=[{"path": f"$.rules[{i}]", "message": "set max and/or min"}],
            )
        if rule.max is not None and rule.min is not None and rule.min >= rule.max:
            raise ValidationFailed(
                f"rule for {rule.metric!r} has min >= max",
                code="alarm_rule_empty_range",
                details=[{"path": f"$.rules[{i}].min", "message": "min must be below max"}],
            )


class AlarmService:
    def __init__(self, store: Store, registry: DeviceRegistry, bus: LiveBus) -> None:
        self.store = store
        self.registry = registry
        self.bus = bus
        self._rules: dict[tuple[str, str], list[AlarmRule]] = {}
        # (project, device, metric, bound) -> the raised alert payload
        self.active: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    def load(self) -> None:
        for project, device_type, rules in self.store.query(
            "SELECT project_id, device_type, rules FROM alarm_rules"
        ):
            self._rules[project, device_type] = msgspec.convert(json.loads(rules), list[AlarmRule])

    def rules(
        self, project_id: str, device_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        return {
            dtype: [msgspec.to_builtins(r) for r in rules]
            for (p, dtype), rules in sorted(self._rules.items())
            if p == project_id and (device_type is None or dtype == device_type)
        }

    def rules_for(self, project_id: str, device_type: str | None) -> list[AlarmRule]:
        return self._rules.get((project_id, device_type or ""), [])

    def set_rules(self, project_id: str, device_type: str, rules: AlarmRules) -> None:
        check_rules(rules)
        doc = msgspec.json.encode(rules.rules).decode()
        self.store.upsert(
            "alarm_rules",
            ("project_id", "device_type"),
            {
                "project_id": project_id,
                "device_type": device_type,
                "rules": doc,
                "updated_at": datetime.now(UTC).replace(tzinfo=None),
            },
        )
        self._rules[project_id, device_type] = list(rules.rules)

    def active_for(self, project_id: str, device_id: str) -> list[dict[str, Any]]:
        return [
            alert
            for (p, d, _, _), alert in sorted(self.active.items())
            if p == project_id and d == device_id
        ]

    def __call__(self, rows: TelemetryRows) -> None:
        """Telemetry listener: check committed readings against their device type's rules."""
        project = rows.project_id
        if not any(p == project for p, _ in self._rules):
            return
        order = sorted(range(len(rows.readings)), key=lambda i: int(rows.ts_us[i]))
        for pos in order:
            reading = rows.readings[pos]
            device = self.registry.get(project, reading.device_id)
            device_type = device.device_type if device else reading.device_type
            rules = self._rules.get((project, device_type or ""))
            if not rules:
                continue
            for rule in rules:
                value = reading.metrics.get(rule.metric)
                if value is None:
                    continue
                at = datetime.fromtimestamp(int(rows.ts_us[pos]) / 1e6, UTC)
                for bound, limit, breach in (
                    ("max", rule.max, rule.max is not None and value > rule.max),
                    ("min", rule.min, rule.min is not None and value < rule.min),
                ):
                    if limit is None:
                        continue
                    key = (project, reading.device_id, rule.metric, bound)
                    was = key in self.active
                    if breach == was:
                        continue
                    alert = {
                        "type": "threshold_alarm",
                        "state": "raised" if breach else "cleared",
                        "device_id": reading.device_id,
                        "device_type": device_type,
                        "metric": rule.metric,
                        "value": value,
                        "limit": limit,
                        "bound": bound,
                        "severity": rule.severity,
                        "timestamp": rfc3339(at),
                    }
                    if breach:
                        self.active[key] = alert
                    else:
                        self.active.pop(key, None)
                    self.bus.publish(project, "alerts", alert)
