"""Periodic evaluation of every rule, with a cooldown so one incident sends one alert.

The scheduler evaluates all rules every ``interval`` seconds (``AVILA_ALERTS_INTERVAL_SECONDS``,
default 1 s) against the store, and sooner when :meth:`AlertScheduler.nudge` is called (the
app nudges it after every committed telemetry batch, so a reading over a threshold is seen at
once). It does not listen to the live ``events`` feed: that feed runs when an event is
acknowledged, which may be before it is loaded into the store, so reading the store then would
miss it; the short schedule is what bounds the delay for events (acknowledged events are
readable within about a second).

A rule *fires* when its metric breaches the condition and its last firing is at least
``cooldown_seconds`` old (the last firing is kept in the store, so a restart does not re-alert).
A firing is written to the history, published as an ``Alert`` on the WebSocket ``alerts``
channel of the rule's project, and handed to :class:`~avila.alerts.delivery.Deliverer` in a
task of its own: evaluation never waits for a destination. Store reads run in a worker thread,
so neither ingestion nor the event loop waits for an evaluation either.

**Replicas** (``AVILA_REDIS_URL``, one shared store): every replica evaluates every rule, and
a firing goes out once. Before firing, a replica takes the rule's lease for its cooldown
(:mod:`avila.shared.leases`); a replica that finds the lease taken stays quiet, as if it had
fired itself. Rules created or deleted through one replica are reloaded by the others within
:data:`RULES_RECHECK_SECONDS` (:mod:`avila.shared.changes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta

from avila.alerts.delivery import Deliverer
from avila.alerts.repository import AlertRepository, DeliveryResult, Firing, utc_now
from avila.alerts.rules import Rule, RuleSpec, breaches, evaluate
from avila.live.bus import LiveBus
from avila.shared.changes import Changes, LocalChanges
from avila.shared.leases import Leases, LocalLeases

log = logging.getLogger("avila.alerts")

#: Shortest pause between two evaluation rounds, however often the scheduler is nudged.
MIN_GAP_SECONDS = 0.2
#: How long shutdown waits for deliveries in flight before cancelling them.
DRAIN_SECONDS = 5.0
#: How often a replica asks whether another one changed the rules.
RULES_RECHECK_SECONDS = 1.0
#: Name of the rules' change counter (:mod:`avila.shared.changes`).
RULES_CHANGES = "alert_rules"


class AlertScheduler:
    def __init__(
        self,
        repository: AlertRepository,
        deliverer: Deliverer,
        bus: LiveBus,
        interval: float = 1.0,
        *,
        changes: Changes | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.repository = repository
        self.deliverer = deliverer
        self.bus = bus
        self.interval = interval
        self.changes: Changes = changes or LocalChanges()
        self.leases: Leases = leases or LocalLeases()
        self._rules_version: int | None = None
        self._rules_checked_at = 0.0
        self.rules: dict[str, Rule] = {}
        self.last_fired: dict[str, datetime] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[list[DeliveryResult]]] = set()
        self._failing: dict[str, str] = {}  # rule id -> repr of its current evaluation error

    async def start(self) -> None:
        await self._load_rules()
        self.deliverer.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._deliveries:
            _, pending = await asyncio.wait(self._deliveries, timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.deliverer.close()

    async def _load_rules(self) -> None:
        self._rules_version = await asyncio.to_thread(self.changes.version, RULES_CHANGES)
        self._rules_checked_at = time.monotonic()
        rules = await asyncio.to_thread(self.repository.rules)
        self.rules = {rule.id: rule for rule in rules}
        self.last_fired = await asyncio.to_thread(self.repository.last_firings)

    async def _reload_rules_if_changed(self) -> None:
        if time.monotonic() - self._rules_checked_at < RULES_RECHECK_SECONDS:
            return
        self._rules_checked_at = time.monotonic()
        version = await asyncio.to_thread(self.changes.version, RULES_CHANGES)
        if version is not None and version != self._rules_version:
            await self._load_rules()

    def nudge(self) -> None:
        """Evaluate soon (call from the event loop's thread)."""
        self._wake.set()

    # --- rules -----------------------------------------------------------------------------

    async def add_rule(self, project_id: str, spec: RuleSpec) -> Rule:
        rule = await asyncio.to_thread(self.repository.add_rule, project_id, spec)
        self.rules[rule.id] = rule
        await asyncio.to_thread(self.changes.bump, RULES_CHANGES)
        self.nudge()
        return rule

    async def delete_rule(self, project_id: str, rule_id: str) -> bool:
        deleted = await asyncio.to_thread(self.repository.delete_rule, project_id, rule_id)
        if deleted:
            self.rules.pop(rule_id, None)
            await asyncio.to_thread(self.changes.bump, RULES_CHANGES)
        return deleted

    def project_rules(self, project_id: str) -> list[Rule]:
        return [r for r in self.rules.values() if r.project_id == project_id]

    # --- evaluation ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            started = time.monotonic()
            try:
                await self.tick()
            except Exception:  # one bad round must not stop alerting for good
                log.exception("alert evaluation round failed")
            await asyncio.sleep(max(0.0, MIN_GAP_SECONDS - (time.monotonic() - started)))

    async def tick(self, now: datetime | None = None) -> list[Firing]:
        """Evaluate every rule once at ``now`` (naive UTC); returns the firings it started."""
        await self._reload_rules_if_changed()
        if not self.rules:
            return []
        now = now or utc_now()
        rules = list(self.rules.values())
        values = await asyncio.to_thread(self._evaluate_all, rules, now)
        firings = []
        for rule, value in zip(rules, values, strict=True):
            if rule.id not in self.rules or not breaches(rule.spec.condition, value):
                continue
            last = self.last_fired.get(rule.id)
            cooldown = timedelta(seconds=rule.spec.cooldown)
            if last is not None and now - last < cooldown:
                continue
            # Another replica that fired the rule holds its lease (cooldown 0: one round).
            period = max(cooldown.total_seconds(), self.interval)
            if not await asyncio.to_thread(self.leases.acquire, f"alert:{rule.id}", period):
                continue
            assert value is not None
            firings.append(await self._fire(Firing(rule, value, now)))
        return firings

    def _evaluate_all(self, rules: list[Rule], now: datetime) -> list[float | None]:
        values: list[float | None] = []
        for rule in rules:
            try:
                spec = rule.spec
                store = self.repository.store
                values.append(
                    evaluate(store, rule.project_id, spec.metric, spec.window_seconds, now)
                )
                self._failing.pop(rule.id, None)
            except Exception as exc:
                # Logged once per distinct error, not once a second while it lasts.
                if self._failing.get(rule.id) != repr(exc):
                    self._failing[rule.id] = repr(exc)
                    log.exception("alert rule evaluation failed", extra={"rule_id": rule.id})
                values.append(None)
        return values

    async def _fire(self, firing: Firing) -> Firing:
        self.last_fired[firing.rule.id] = firing.fired_at
        await asyncio.to_thread(self.repository.add_firing, firing)
        self.bus.publish(firing.rule.project_id, "alerts", firing.payload())
        log.info(
            "alert fired",
            extra={"rule_id": firing.rule.id, "value": firing.value, "firing_id": firing.id},
        )
        task = asyncio.get_running_loop().create_task(
            self.deliverer.deliver(firing, self._record), name=f"alert-delivery-{firing.id}"
        )
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return firing

    async def _record(self, firing: Firing, result: DeliveryResult) -> None:
        await asyncio.to_thread(self.repository.add_delivery, firing, result)
