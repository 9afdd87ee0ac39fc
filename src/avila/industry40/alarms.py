"""Threshold alarms per device type, published on the live bus's ``alerts`` channel.

A project configures, per device type, rules ``{"metric", "max"?, "min"?, "severity"}``
(``severity`` ``warning`` | ``critical``; default ``warning``). Every committed reading of a
device of that type is checked; an alarm is *raised* when a value leaves [min, max] and *cleared*
when a later reading is back inside, so a stuck sensor raises one alert, not one per reading.
Alert payload::

    {"type": "threshold_alarm", "state": "raised"|"cleared", "device_id", "device_type",
     "metric", "value", "limit", "bound": "max"|"min", "severity", "timestamp"}

A warning and a critical limit on one bound are one alarm, raised under the most severe limit in
breach. A raised alarm whose most severe breached limit changes severity is replaced and
announced with ``"state": "escalated"`` (warning to critical) or ``"de-escalated"`` (critical to
warning) and ``"previous_severity"``: the active list always shows the current breach.

Rules are stored in ``alarm_rules`` (one JSON document per project and device type) and cached
in memory: the listener and the API read the cached rules without any I/O. With several replicas
(``AVILA_REDIS_URL``) a thread of the service's own follows the rules changed through the others
(:meth:`AlarmService.start`), so no request ever waits for Redis or the store because of them.
Which alarms are raised lives in :mod:`avila.shared.alarm_states`: in memory for one replica
(after a restart an alarm still in breach is raised again by its next reading), in Redis for
several, so replicas that receive readings of the same device agree and announce each transition
once.
The same rules give predictive maintenance its failure thresholds (see
:mod:`avila.industry40.records`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from avila.errors import ValidationFailed
from avila.industry40.devices import DeviceRegistry, rfc3339
from avila.industry40.telemetry import MetricName, TelemetryRows
from avila.live.bus import LiveBus
from avila.shared.alarm_states import AlarmKey, AlarmStates, LocalAlarmStates, Transition
from avila.shared.changes import Changes, LocalChanges
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
        # JSON cannot carry NaN or infinity: stored, such a limit would come back as null (a
        # rule without that limit). Refused, whichever way the rule was built.
        for bound, limit in (("max", rule.max), ("min", rule.min)):
            if limit is not None and not math.isfinite(limit):
                raise ValidationFailed(
                    f"rule for {rule.metric!r}: {bound} must be a finite number, not {limit}",
                    code="alarm_rule_non_finite_limit",
                    details=[{"path": f"$.rules[{i}].{bound}", "message": "not a finite number"}],
                )
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


#: Seconds between two looks at whether another replica changed the rules.
RULES_RECHECK_SECONDS = 1.0
_CHANGES = "alarm_rules"


class AlarmService:
    def __init__(
        self,
        store: Store,
        registry: DeviceRegistry,
        bus: LiveBus,
        changes: Changes | None = None,
        states: AlarmStates | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.bus = bus
        #: Rules set through another replica (shared store) are reloaded by the follower thread
        #: (:meth:`start`) within RULES_RECHECK_SECONDS of the counter moving; in process it
        #: never moves and nothing follows it.
        self.changes: Changes = changes or LocalChanges()
        self._seen_version: int | None = None
        #: The rules by (project, device type). Replaced whole, never changed in place: a reader
        #: on any thread (the event loop included) takes the current one, without a lock or I/O.
        self._rules: dict[tuple[str, str], list[AlarmRule]] = {}
        # One reload or rules change at a time, so a reload that read the store before a change
        # cannot put back the rules the change just replaced.
        self._rules_lock = threading.Lock()
        self._follower: threading.Thread | None = None
        self._stop_following = threading.Event()
        self.states: AlarmStates = states or LocalAlarmStates()
        # Shared states are judged in one thread of their own, batch after batch in arrival
        # order, so a slow or unreachable Redis never holds up the event loop's acknowledgements.
        self._judge_thread: ThreadPoolExecutor | None = None

    def load(self) -> None:
        """Read every rule from the store (blocking: call it off the event loop)."""
        with self._rules_lock:
            # The counter before the rules: a change made meanwhile is reloaded next time.
            version = self.changes.version(_CHANGES)
            loaded: dict[tuple[str, str], list[AlarmRule]] = {}
            for project, device_type, rules in self.store.query(
                "SELECT project_id, device_type, rules FROM alarm_rules"
            ):
                loaded[project, device_type] = msgspec.convert(json.loads(rules), list[AlarmRule])
            self._rules = loaded
            # Only once they are loaded: a failed reload is tried again at the next look.
            self._seen_version = version

    def start(self) -> None:
        """Load the rules, then follow the changes made through other replicas: a thread looks
        at the change counter every RULES_RECHECK_SECONDS and reloads when it moved. Blocking
        (the first load): call it off the event loop. In process (:class:`LocalChanges`) no
        other replica changes anything and no thread is started."""
        self.load()
        if self._follower is not None or isinstance(self.changes, LocalChanges):
            return
        self._stop_following.clear()
        self._follower = threading.Thread(
            target=self._follow, name="avila-alarm-rules", daemon=True
        )
        self._follower.start()

    def _follow(self) -> None:
        while not self._stop_following.wait(RULES_RECHECK_SECONDS):
            try:
                self.reload_if_changed()
            except Exception as exc:  # the store failed: keep the cached rules, look again
                log.warning("alarm rules not reloaded", extra={"error": repr(exc)})

    def reload_if_changed(self) -> bool:
        """Reload the rules if another replica changed them (blocking: Redis, the store);
        True when it did. Redis not answering keeps the cached rules."""
        version = self.changes.version(_CHANGES)
        if version is None or version == self._seen_version:
            return False
        self.load()
        return True

    def rules(
        self, project_id: str, device_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """The project's cached rules by device type (no I/O: safe on the event loop)."""
        current = self._rules
        return {
            dtype: [msgspec.to_builtins(r) for r in rules]
            for (p, dtype), rules in sorted(current.items())
            if p == project_id and (device_type is None or dtype == device_type)
        }

    def rules_for(self, project_id: str, device_type: str | None) -> list[AlarmRule]:
        """The cached rules of one device type (no I/O: safe on the event loop)."""
        return self._rules.get((project_id, device_type or ""), [])

    def set_rules(
        self, project_id: str, device_type: str, rules: AlarmRules
    ) -> list[dict[str, Any]]:
        """Store the type's rules; returns the alarms this cleared (the caller announces them):
        raised alarms of the type whose metric and bound no longer have a limit, which no
        reading would ever judge again. A limit that only moved is judged by the next reading."""
        check_rules(rules)
        doc = msgspec.json.encode(rules.rules).decode()
        with self._rules_lock:
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
            # Seen by this replica's next request at once; by the others after the bump.
            self._rules = {**self._rules, (project_id, device_type): list(rules.rules)}
        self.changes.bump(_CHANGES)
        limited = {
            (rule.metric, bound)
            for rule in rules.rules
            for bound, limit in (("max", rule.max), ("min", rule.min))
            if limit is not None
        }
        stale = [
            alert
            for alert in self.states.raised(project_id)
            if alert.get("device_type") == device_type
            and (alert["metric"], alert["bound"]) not in limited
        ]
        changed = self.states.apply(
            [((project_id, a["device_id"], a["metric"], a["bound"]), None) for a in stale]
        )
        now = rfc3339(datetime.now(UTC))
        return [
            {**alert, "state": "cleared", "reason": "rule_removed", "timestamp": now}
            for alert, cleared in zip(stale, changed, strict=True)
            if cleared
        ]

    def active(self, project_id: str) -> list[dict[str, Any]]:
        """The project's raised alarms, by (device, metric, bound)."""
        return self.states.raised(project_id)

    def active_for(self, project_id: str, device_id: str) -> list[dict[str, Any]]:
        return [a for a in self.states.raised(project_id) if a["device_id"] == device_id]

    def __call__(self, rows: TelemetryRows) -> None:
        """Telemetry listener: check committed readings against their device type's rules.
        Runs on the event loop: reads the cached rules only."""
        if not any(p == rows.project_id for p, _ in self._rules):
            return
        if not self.states.remote:
            self.judge(rows)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the server (a script, a test): judge here
            self.judge(rows)
            return

        def publish(alert: dict[str, Any]) -> None:  # the bus belongs to the event loop
            loop.call_soon_threadsafe(self.bus.publish, rows.project_id, "alerts", alert)

        if self._judge_thread is None:
            self._judge_thread = ThreadPoolExecutor(1, thread_name_prefix="avila-alarms")
        self._judge_thread.submit(self._judge_logged, rows, publish)

    def close(self) -> None:
        """Stop following the other replicas' changes; wait for the batches handed to the
        judging thread, then stop it. Blocking: call it off the event loop."""
        follower, self._follower = self._follower, None
        if follower is not None:
            self._stop_following.set()
            follower.join()  # at most one look at Redis (its timeout) and one reload
        if self._judge_thread is not None:
            self._judge_thread.shutdown(wait=True)
            self._judge_thread = None

    def _judge_logged(self, rows: TelemetryRows, publish: Callable[[dict[str, Any]], None]) -> None:
        try:
            self.judge(rows, publish)
        except Exception:
            log.exception("alarm judgement failed")

    def judge(
        self, rows: TelemetryRows, publish: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """Raise and clear alarms for a batch of readings, in time order, and publish each
        transition this replica made (see :mod:`avila.shared.alarm_states`); ``publish``
        defaults to the live bus's ``alerts`` channel."""
        project = rows.project_id
        current = self._rules
        # One check per reading and metric with every rule of that metric: a warning and a
        # critical limit on one bound are one alarm, in breach when either limit is crossed.
        checks: list[tuple[int, str, str | None, str, float, list[AlarmRule]]] = []
        for pos in sorted(range(len(rows.readings)), key=lambda i: int(rows.ts_us[i])):
            reading = rows.readings[pos]
            device = self.registry.get(project, reading.device_id)
            device_type = device.device_type if device else reading.device_type
            by_metric: dict[str, list[AlarmRule]] = {}
            for rule in current.get((project, device_type or ""), ()):
                if reading.metrics.get(rule.metric) is not None:
                    by_metric.setdefault(rule.metric, []).append(rule)
            for metric, metric_rules in by_metric.items():
                value = reading.metrics[metric]
                checks.append((pos, reading.device_id, device_type, metric, value, metric_rules))
        if not checks:
            return
        keys = {
            (project, device_id, rule.metric, bound)
            for _, device_id, _, _, _, metric_rules in checks
            for rule in metric_rules
            for bound, limit in (("max", rule.max), ("min", rule.min))
            if limit is not None
        }
        previous = self.states.current(keys)
        raised: set[AlarmKey] = set(previous)
        # (severity, limit) of each raised alarm: a clear announces the alarm it ends
        raised_as = {k: (a.get("severity"), a.get("limit")) for k, a in previous.items()}
        transitions: list[Transition] = []
        # (index of the transition whose change makes it announced, the alert)
        announcements: list[tuple[int, dict[str, Any]]] = []
        for pos, device_id, device_type, metric, value, metric_rules in checks:
            at = datetime.fromtimestamp(int(rows.ts_us[pos]) / 1e6, UTC)
            for bound in ("max", "min"):
                limited = [
                    (rule, limit)
                    for rule in metric_rules
                    if (limit := rule.max if bound == "max" else rule.min) is not None
                ]
                if not limited:
                    continue
                breached = [
                    (rule, limit)
                    for rule, limit in limited
                    if (value > limit if bound == "max" else value < limit)
                ]
                key = (project, device_id, metric, bound)
                was_raised = key in raised
                if not breached and not was_raised:
                    continue
                before = raised_as.get(key, (None, None))[0]
                if breached:
                    # the most severe rule in breach: a raised alarm takes its severity
                    rule, limit = _most_severe(breached, bound)
                    if not was_raised:
                        state = "raised"
                    elif rule.severity == before:
                        continue
                    else:
                        state = "escalated" if rule.severity == "critical" else "de-escalated"
                else:
                    # a clear announces the alarm it ends: the rule it was raised under
                    rule, limit = _most_severe(
                        [rl for rl in limited if (rl[0].severity, rl[1]) == raised_as.get(key)]
                        or limited,
                        bound,
                    )
                    state = "cleared"
                alert: dict[str, Any] = {
                    "type": "threshold_alarm",
                    "state": state,
                    "device_id": device_id,
                    "device_type": device_type,
                    "metric": metric,
                    "value": value,
                    "limit": limit,
                    "bound": bound,
                    "severity": rule.severity,
                }
                if state in ("escalated", "de-escalated"):
                    alert["previous_severity"] = before
                alert["timestamp"] = rfc3339(at)
                if breached:
                    if was_raised:
                        # AlarmStates has raise and clear only: a change of severity replaces
                        # the raised alert (clear, then raise) and is announced if the raise took
                        transitions.append((key, None))
                    raised.add(key)
                    raised_as[key] = (rule.severity, limit)
                else:
                    raised.discard(key)
                transitions.append((key, alert if breached else None))
                announcements.append((len(transitions) - 1, alert))
        changed = self.states.apply(transitions)
        for index, alert in announcements:
            if changed[index]:
                if publish is None:
                    self.bus.publish(project, "alerts", alert)
                else:
                    publish(alert)


def _most_severe(candidates: list[tuple[AlarmRule, float]], bound: str) -> tuple[AlarmRule, float]:
    """Critical before warning; within a severity, the limit furthest out."""
    return min(
        candidates,
        key=lambda rl: (rl[0].severity != "critical", -rl[1] if bound == "max" else rl[1]),
    )
