"""GET /health and GET /metrics (no key needed)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import MediaType, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from avila import __version__
from avila.metrics import Metrics
from avila.storage.base import Store

log = logging.getLogger("avila.api")
#: How long the store may take to answer the health check's trivial query.
PING_TIMEOUT_S = 2.0


@get(
    "/health", summary="Liveness and storage check", tags=["operations"], media_type=MediaType.JSON
)
async def health(store: Store) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"status": "ok", "storage": "ok", "version": __version__}
    status = 200
    try:
        ping = asyncio.get_running_loop().run_in_executor(None, store.ping)
        await asyncio.wait_for(ping, PING_TIMEOUT_S)
    except Exception as exc:  # any failure means not healthy
        # Anyone may ask /health: the error's text (file paths, hosts, a connection URL) is
        # for the log only.
        code = "storage_timeout" if isinstance(exc, TimeoutError) else "storage_unavailable"
        log.error("health check: storage unavailable", extra={"code": code, "error": repr(exc)})
        body.update(status="degraded", storage="unavailable", storage_error=code)
        status = 503
    ingest_log = store.ingest_log
    if ingest_log is not None:
        # The ingest log's backlog: acknowledged writes not yet loaded into the store.
        body["ingest_log"] = ingest_log.backlog()
    return Response(body, status_code=status)


@get("/metrics", summary="Prometheus metrics", tags=["operations"])
async def metrics(app_metrics: Metrics) -> Response[bytes]:
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)


ROUTES = [health, metrics]
