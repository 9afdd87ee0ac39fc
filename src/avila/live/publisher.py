"""Once a second, a ``metrics`` message to every project that has a subscriber for it."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from avila.live.activity import ACTIVE_WINDOW_SECONDS, ActivityTracker
from avila.live.bus import LiveBus
from avila.metrics import Metrics

log = logging.getLogger("avila.live")


def request_totals(metrics: Metrics) -> tuple[float, float, float]:
    """``(all, 4xx, 5xx)`` HTTP responses counted by the app's Prometheus metrics so far."""
    total = client = server = 0.0
    for metric in metrics.requests.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            total += sample.value
            status = sample.labels.get("status", "")
            if status.startswith("5"):
                server += sample.value
            elif status.startswith("4"):
                client += sample.value
    return total, client, server


class MetricsPublisher:
    """Publishes :meth:`payload` for each subscribed project every ``interval`` seconds.

    ``error_rate`` (5xx) and ``client_error_rate`` (4xx) are shares of the HTTP responses of
    the whole server during the last interval: the app's request metrics are not per project.
    """

    def __init__(
        self, bus: LiveBus, activity: ActivityTracker, metrics: Metrics, interval: float = 1.0
    ) -> None:
        self.bus = bus
        self.activity = activity
        self.metrics = metrics
        self.interval = interval
        self._last_totals = request_totals(metrics)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="live-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.tick()
            except Exception:  # a bad tick must not end the live metrics for good
                log.exception("live metrics tick failed")

    def tick(self) -> int:
        """Publish one round; returns how many projects it went to."""
        totals = request_totals(self.metrics)
        previous, self._last_totals = self._last_totals, totals
        requests, client, server = (
            now - before for now, before in zip(totals, previous, strict=True)
        )
        self.activity.prune()
        projects = self.bus.projects("metrics")
        if not projects:
            return 0
        common: dict[str, Any] = {
            "timestamp": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "interval_seconds": self.interval,
            "requests_per_second": requests / self.interval,
            "error_rate": server / requests if requests else 0.0,
            "client_error_rate": client / requests if requests else 0.0,
            "active_users_window_seconds": ACTIVE_WINDOW_SECONDS,
        }
        for project_id in projects:
            self.bus.publish(
                project_id, "metrics", {**common, **self.activity.snapshot(project_id)}
            )
        return len(projects)
