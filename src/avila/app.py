"""create_app(settings): wiring only."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any, cast

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.plugins import PluginProtocol
from litestar.plugins.core import MsgspecDIPlugin

from avila import __version__
from avila.api import alerts as alerts_api
from avila.api import analytics as analytics_api
from avila.api import (
    docs_ui,
    events,
    export,
    health,
    keys,
    me,
    methods,
    path_ids,
    segment,
    tracker,
    web,
    ws,
)
from avila.api import experiments as experiments_api
from avila.api import industry40 as industry40_api
from avila.api import ml as ml_api
from avila.api import users as users_api
from avila.api.component import AppContext
from avila.api.errors import EXCEPTION_HANDLERS
from avila.api.fast_ingest import ASGIApp, FastIngest
from avila.api.observability import MetricsMiddleware
from avila.api.security import (
    CorsMiddleware,
    add_rate_limit_headers,
    provide_principal,
    scope_guard,
)
from avila.config import Settings
from avila.ingest.service import IngestService
from avila.live.bus import STATE_KEY as LIVE_BUS
from avila.metrics import Metrics
from avila.shared import ALARM_STATES_KEY, CHANGES_KEY, LEASES_KEY, open_shared
from avila.storage import Store, open_store
from avila.storage.clickhouse.target import ClickHouseOptions
from avila.storage.ingest_log import config_from_settings

log = logging.getLogger("avila")

#: Resources of the API, in start order (see avila.api.component).
API_MODULES: tuple[ModuleType, ...] = (
    events,
    health,
    segment,
    tracker,
    export,
    ws,
    industry40_api,
    ml_api,
    analytics_api,
    users_api,
    experiments_api,
    alerts_api,  # after industry40_api: it listens to committed telemetry
    me,
    keys,
    web,
)


def _constant(value: Any) -> Provide:
    return Provide(lambda: value, sync_to_thread=False)


def _tune_gc() -> None:
    """Ingest allocates many short-lived containers (a Struct and a dict per IoT reading, a
    tuple per event); with the default thresholds the collector ran often enough, over the
    server's large long-lived heap, to take ~45 % of the server's CPU per telemetry reading
    (benchmarks/RESULTS.md). What exists once the app has started lives as long as the process:
    freeze it (never scanned again), and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


#: A shutdown step taking longer is logged with its time: a stop that outlasts an orchestrator's
#: grace period (Kubernetes: 30 s) ends in SIGKILL, and the log then says which step held it.
SLOW_SHUTDOWN_STEP_S = 2.0


@asynccontextmanager
async def _shutdown_step(name: str) -> AsyncIterator[None]:
    """One step of the shutdown, its time logged when it is slow."""
    started = time.monotonic()
    try:
        yield
    finally:
        took = time.monotonic() - started
        if took > SLOW_SHUTDOWN_STEP_S:
            log.warning("shutdown step slow", extra={"component": name, "seconds": round(took, 2)})


async def _close_model_registry(ctx: AppContext) -> None:
    """Close what the model registry holds open (with ``AVILA_REDIS_URL``: its own Redis client,
    from ``avila.shared.open_model_registry``), as ``SharedState.close`` closes the shared
    state's: after the modules' shutdown, off the loop."""
    ml = ctx.state.get("ml")
    close = getattr(ml.get("registry"), "close", None) if isinstance(ml, dict) else None
    if callable(close):
        try:
            await asyncio.to_thread(close)
        except Exception:
            log.exception("shutdown failed", extra={"component": "model registry"})


class _Litestar(Litestar):
    """Litestar with only its msgspec plugin. Its default plugins for pydantic and attrs models
    load whenever those libraries are installed (a test and a docs tool bring them), though no
    route uses such a model: ~0.5 CPU-s of every start, and a server unlike a production one."""

    @staticmethod
    def _get_default_plugins(plugins: list[PluginProtocol]) -> list[PluginProtocol]:
        plugins.append(MsgspecDIPlugin())
        return plugins


def create_app(settings: Settings, *, store: Store | None = None) -> MetricsMiddleware:
    """The ASGI application. Opens the store now so a bad store fails at start."""
    store = store or open_store(
        settings.storage_url,
        in_process=False,
        memory_limit=settings.duckdb_memory_limit,
        threads=settings.duckdb_threads or None,
        query_timeout=settings.query_timeout,
        clickhouse=ClickHouseOptions.from_settings(settings),
    )
    if store.ingest_log_config is None:
        store.ingest_log_config = config_from_settings(settings)
    metrics = Metrics()
    shared = open_shared(settings)
    ingest = IngestService(
        store,
        metrics=metrics,
        dedup_window_hours=settings.dedup_window_hours,
        claims=shared.claims,
    )
    ctx = AppContext(settings=settings, store=store, metrics=metrics, ingest=ingest)
    ctx.state.update(
        {
            "settings": settings,
            "store": store,
            "metrics": metrics,
            "ingest": ingest,
            "context": ctx,
            "key_store": shared.keys,
            "rate_limiter": shared.rate_limiter,
            LIVE_BUS: shared.bus,
            CHANGES_KEY: shared.changes,
            LEASES_KEY: shared.leases,
            ALARM_STATES_KEY: shared.alarm_states,
        }
    )
    for module in API_MODULES:
        if hasattr(module, "setup"):
            module.setup(ctx)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await ingest.start()
        shared.start()
        started: list[ModuleType] = []
        try:
            for module in API_MODULES:
                if hasattr(module, "startup"):
                    await module.startup(ctx)
                started.append(module)
            _tune_gc()
            log.info("avila started", extra={"version": __version__, "store": settings.storage_url})
            yield
        finally:
            for module in reversed(started):
                if hasattr(module, "shutdown"):
                    async with _shutdown_step(module.__name__):
                        try:
                            await module.shutdown(ctx)
                        except Exception:
                            log.exception("shutdown failed", extra={"component": module.__name__})
            async with _shutdown_step("ingest"):
                await ingest.close()
            async with _shutdown_step("model registry"):
                await _close_model_registry(ctx)
            async with _shutdown_step("shared state"):
                await shared.close()
            async with _shutdown_step("store"):
                store.close()
            log.info("avila stopped; pending events flushed")

    dependencies: dict[str, Provide] = {
        "store": _constant(store),
        "ingest": _constant(ingest),
        "app_metrics": _constant(metrics),
        "settings": _constant(settings),
        "ctx": _constant(ctx),
        "principal": Provide(provide_principal, sync_to_thread=False),
    }
    routes: list[Any] = list(docs_ui.ROUTES)
    for module in API_MODULES:
        routes.extend(getattr(module, "ROUTES", []))
        for name, factory in getattr(module, "DEPENDENCIES", {}).items():
            dependencies[name] = _constant(factory(ctx.state))

    cors = (
        CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["content-type", "x-api-key", "authorization", "if-match"],
            expose_headers=[
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "Retry-After",
                "ETag",
            ],
            max_age=600,
        )
        if settings.enable_cors
        else None
    )
    app = _Litestar(
        route_handlers=methods.with_options(routes),
        state=State(ctx.state),
        dependencies=dependencies,
        guards=[scope_guard],
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[add_rate_limit_headers],
        middleware=[path_ids.decode_path_params],  # ids with an encoded '/' (api/path_ids)
        cors_config=None,  # CORS is avila.api.security.CorsMiddleware's, below
        lifespan=[lifespan],
        openapi_config=docs_ui.openapi_config(),
        request_max_body_size=1024 * 1024,
        debug=False,
        logging_config=None,
    )
    # The two event-ingest routes answered without the framework when nothing is unusual
    # (avila.api.fast_ingest): the server's CPU per request is what limits ingest.
    fast = FastIngest(
        cast(ASGIApp, path_ids.RawPathRouting(app)),  # route '%2F' inside an id's segment
        ingest=ingest,
        keys=ctx.state["key_store"],
        limiter=ctx.state["rate_limiter"],
        metrics=metrics,
    )
    return MetricsMiddleware(fast if cors is None else CorsMiddleware(fast, cors), metrics)
