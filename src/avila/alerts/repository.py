"""Rules and firing history in the store (tables of DuckDB migration 6).

Everything here is append-or-delete, never UPDATE: a firing row is written when a rule fires
(with the list of its destinations), and one delivery row per destination when that delivery
ends. A destination without its row is still ``pending``. The cooldown survives a restart
because the last firing of each rule is read back from ``alert_firings``.

Secrets never leave through :func:`public_rule` or the history: a webhook's ``secret`` becomes
``"secret_set": true`` and Slack URLs (the token is in the path) show only their host.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from avila.alerts.rules import (
    Destination,
    EmailDestination,
    Rule,
    RuleSpec,
    SlackDestination,
    WebhookDestination,
)
from avila.storage.base import Store

#: Most firings one history request returns.
MAX_HISTORY = 1000


def utc_now() -> datetime:
    """Now as the store keeps times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


def describe(destination: Destination) -> str:
    """Where a delivery goes, without secrets."""
    if isinstance(destination, EmailDestination):
        return ", ".join(destination.to)
    parts = urlsplit(destination.url)
    if isinstance(destination, SlackDestination):
        return f"{parts.scheme}://{parts.netloc}/…"
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def public_rule(rule: Rule) -> dict[str, Any]:
    """The API view of a rule: its spec with secrets hidden, plus id and creation time."""
    spec = msgspec.to_builtins(rule.spec)
    for shown, destination in zip(spec["destinations"], rule.spec.destinations, strict=True):
        if isinstance(destination, WebhookDestination):
            shown.pop("secret", None)
            shown["secret_set"] = destination.secret is not None
        elif isinstance(destination, SlackDestination):
            shown["url"] = describe(destination)
    return {"id": rule.id, **spec, "created_at": rfc3339(rule.created_at)}


@dataclass
class Firing:
    """One firing of a rule, delivered to each of the rule's destinations."""

    rule: Rule
    value: float
    fired_at: datetime
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def payload(self) -> dict[str, Any]:
        """The webhook body (API.md ``{"rule", "value", "threshold", "fired_at", "project"}``)
        and the ``Alert`` message of the WebSocket ``alerts`` channel."""
        spec = self.rule.spec
        return {
            "type": "rule_alert",
            "rule": spec.name,
            "rule_id": self.rule.id,
            "firing_id": self.id,
            "metric": spec.metric.__struct_config__.tag,
            "op": spec.condition.op,
            "value": self.value,
            "threshold": spec.condition.threshold,
            "window_seconds": spec.window_seconds,
            "fired_at": rfc3339(self.fired_at),
            "project": self.rule.project_id,
        }


@dataclass
class DeliveryResult:
    position: int
    status: str  # "delivered" | "failed"
    attempts: int
    error: str | None
    finished_at: datetime


class AlertRepository:
    """Blocking store access for alert rules and history; call from a worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add_rule(self, project_id: str, spec: RuleSpec) -> Rule:
        rule = Rule(id=uuid.uuid4().hex, project_id=project_id, spec=spec, created_at=utc_now())
        self.store.execute(
            "INSERT INTO alert_rules VALUES (?, ?, ?, ?, ?)",
            [project_id, rule.id, spec.name, msgspec.json.encode(spec).decode(), rule.created_at],
        )
        return rule

    def delete_rule(self, project_id: str, rule_id: str) -> bool:
        return (
            self.store.delete_rows("alert_rules", {"project_id": project_id, "rule_id": rule_id})
            > 0
        )

    def rules(self) -> list[Rule]:
        """Every project's rules, oldest first."""
        return [
            Rule(
                id=rule_id,
                project_id=project,
                spec=msgspec.json.decode(spec, type=RuleSpec),
                created_at=created,
            )
            for project, rule_id, spec, created in self.store.query(
                "SELECT project_id, rule_id, spec, created_at FROM alert_rules"
                " ORDER BY created_at, rule_id"
            )
        ]

    def last_firings(self) -> dict[str, datetime]:
        """rule id -> its latest firing time (the cooldown's memory across restarts)."""
        return dict(
            self.store.query("SELECT rule_id, max(fired_at) FROM alert_firings GROUP BY rule_id")
        )

    def add_firing(self, firing: Firing) -> None:
        destinations = [
            {"type": d.__struct_config__.tag, "target": describe(d)}
            for d in firing.rule.spec.destinations
        ]
        self.store.execute(
            "INSERT INTO alert_firings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                firing.rule.project_id,
                firing.id,
                firing.rule.id,
                firing.rule.spec.name,
                firing.value,
                firing.rule.spec.condition.op,
                firing.rule.spec.condition.threshold,
                firing.fired_at,
                json.dumps(destinations),
            ],
        )

    def add_delivery(self, firing: Firing, result: DeliveryResult) -> None:
        self.store.execute(
            "INSERT INTO alert_deliveries VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                firing.rule.project_id,
                firing.id,
                result.position,
                result.status,
                result.attempts,
                result.error,
                result.finished_at,
            ],
        )

    def history(
        self, project_id: str, rule_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Firings of the project, newest first, each with one delivery entry per destination:
        ``{"type", "target", "status": "pending"|"delivered"|"failed", "attempts", "error",
        "finished_at"}``."""
        where, params = "project_id = ?", [project_id]
        if rule_id is not None:
            where += " AND rule_id = ?"
            params.append(rule_id)
        firings = self.store.query(
            "SELECT firing_id, rule_id, rule_name, value, op, threshold, fired_at, destinations"
            f" FROM alert_firings WHERE {where} ORDER BY fired_at DESC, firing_id LIMIT ?",
            [*params, min(limit, MAX_HISTORY)],
        )
        if not firings:
            return []
        ids = [row[0] for row in firings]
        done: dict[tuple[str, int], tuple[Any, ...]] = {
            (row[0], int(row[1])): row[2:]
            for row in self.store.query(
                "SELECT firing_id, position, status, attempts, error, finished_at"
                " FROM alert_deliveries WHERE project_id = ? AND list_contains(?, firing_id)",
                [project_id, ids],
            )
        }
        out = []
        for firing_id, rule_id_, name, value, op, threshold, fired_at, destinations in firings:
            deliveries = []
            for position, destination in enumerate(json.loads(destinations)):
                status, attempts, error, finished = done.get(
                    (firing_id, position), ("pending", 0, None, None)
                )
                deliveries.append(
                    {
                        **destination,
                        "status": status,
                        "attempts": int(attempts),
                        "error": error,
                        "finished_at": rfc3339(finished) if finished else None,
                    }
                )
            out.append(
                {
                    "id": firing_id,
                    "rule_id": rule_id_,
                    "rule": name,
                    "value": value,
                    "op": op,
                    "threshold": threshold,
                    "fired_at": rfc3339(fired_at),
                    "deliveries": deliveries,
                }
            )
        return out
