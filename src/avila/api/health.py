"""GET /health and GET /metrics (no key needed)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import MediaType, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from avila import __version__
from avila.errors import AvilaError
from avila.metrics import Metrics
from avila.storage.base import Store


@get(
    "/health", summary="Liveness and storage check", tags=["operations"], media_type=MediaType.JSON
)
async def health(store: Store) -> Response[dict[str, Any]]:
    try:
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, store.ping), 2.0)
        storage, status = "ok", 200
    except (AvilaError, TimeoutError, Exception) as exc:  # any failure means not healthy
        storage, status = f"error: {exc}", 503
    body: dict[str, Any] = {
        "status": "ok" if status == 200 else "degraded",
        "storage": storage,
        "version": __version__,
    }
    ingest_log = store.ingest_log
    if ingest_log is not None:
        # The ingest log's backlog: acknowledged writes not yet loaded into the store.
        body["ingest_log"] = ingest_log.backlog()
    return Response(body, status_code=status)


@get("/metrics", summary="Prometheus metrics", tags=["operations"])
async def metrics(app_metrics: Metrics) -> Response[bytes]:
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)


ROUTES = [health, metrics]
