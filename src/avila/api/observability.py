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
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        # Lets tests and tools reach the wrapped Litestar app's attributes (state, openapi ...).
        return getattr(self.app, name)
