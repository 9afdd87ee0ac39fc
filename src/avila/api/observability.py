"""Outermost ASGI layer: per-route request counts and latency histograms for /metrics."""

from __future__ import annotations

import time
from typing import Any

from avila.metrics import Metrics


class MetricsMiddleware:
    """Wraps the whole app so 404/405/413 answers are counted too."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The labelled children by label values: ``labels()`` builds and checks its label tuple
        # under a lock on every call, two calls per request. Routes are templates (a bounded
        # set), so these stay small.
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            count = self._counts.get((method, route, status))
            if count is None:
                count = self._counts[method, route, status] = self.metrics.requests.labels(
                    method, route, str(status)
                )
            count.inc()
            latency = self._latencies.get((method, route))
            if latency is None:
                latency = self._latencies[method, route] = self.metrics.latency.labels(
                    method, route
                )
            latency.observe(elapsed)

    def __getattr__(self, name: str) -> Any:
        # Lets tests and tools reach the wrapped Litestar app's attributes (state, openapi ...).
        return getattr(self.app, name)
