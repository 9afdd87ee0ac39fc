"""Machine learning endpoints: train, list versions, per-user predictions, also-bought, anomalies.

Training runs in a worker thread (never on the event loop), one run per project at a time.
The registry lives under ``<data dir>/models/`` and the newest run of every project is loaded
at start. A monitor task scores each completed minute (streaming detector) and hour
(seasonal detectors of the newest run) of trained projects; new anomalies are stored and
published on the live bus's ``alerts`` channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get, post
from litestar.params import Parameter

from avila.analytics.workers import QueryWorkers
from avila.api.component import AppContext
from avila.errors import MalformedJSON, NotFound, ValidationFailed
from avila.live import get_bus
from avila.ml.anomaly import StreamingAnomalyDetector
from avila.ml.conversion import LiveSessions
from avila.ml.monitoring import AnomalyLog, metric_series, score_hours, streaming_anomalies
from avila.ml.predictions import PredictionService
from avila.ml.training import TrainingOptions, train_project
from avila.schemas.messages import split_msgspec_error
from avila.shared import open_model_registry

log = logging.getLogger("avila.ml")

#: Anomalies older than this are stored but not pushed to live subscribers.
ALERT_MAX_AGE = timedelta(hours=2)
MONITOR_INTERVAL_SECONDS = 60.0
#: How soon a replica serves a model trained on another one (shared registry).
MODEL_REFRESH_SECONDS = 5.0


#: A label window of at least one day (zero or negative days leave no label to learn).
HorizonDays = Annotated[int, msgspec.Meta(ge=1)]


class TrainBody(msgspec.Struct, forbid_unknown_fields=True):
    churn_horizon_days: HorizonDays | None = None
    conversion_horizon_days: HorizonDays | None = None


def _project(request: Request[Any, Any, Any]) -> str:
    return str(request.state.principal.project_id)


def _ml(request: Request[Any, Any, Any]) -> dict[str, Any]:
    ml: dict[str, Any] = request.app.state["ml"]
    return ml


def _publish(state: Any, project_id: str, new: list[dict[str, Any]]) -> None:
    cutoff = datetime.now(UTC) - ALERT_MAX_AGE
    bus = get_bus(state)
    for record in new:
        started = datetime.fromisoformat(record["bucket_start"].replace("Z", "+00:00"))
        if started >= cutoff:
            bus.publish(project_id, "alerts", {"kind": "anomaly", **record})


@post(
    "/api/v1/ml/train",
    opt={"scope": "admin"},
    status_code=200,
    summary="Train every model of the caller's project",
    description=(
        "Reads the project's events, trains and evaluates churn, conversion, session "
        "conversion, recommendations, CLV and next best action, detects metric anomalies, and "
        "stores a new version. 422 `insufficient_training_data` names what is missing."
    ),
    tags=["ml"],
)
async def train(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = msgspec.json.decode(raw or b"{}", type=TrainBody)
    except msgspec.ValidationError as exc:
        message, path = split_msgspec_error(exc, "", TrainBody)
        raise ValidationFailed(
            f"invalid training options: {message}", details=[{"path": path, "message": message}]
        ) from None
    except msgspec.DecodeError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
    ml = _ml(request)
    project = _project(request)
    options = TrainingOptions(
        churn_horizon_days=body.churn_horizon_days,
        conversion_horizon_days=body.conversion_horizon_days,
    )
    lock: asyncio.Lock = ml["locks"].setdefault(project, asyncio.Lock())
    async with lock:
        artifact, meta = await ml["trainer"].run(train_project, ml["store"], project, options)
        meta = await asyncio.to_thread(ml["registry"].save, project, artifact, meta)
        ml["service"].install(project, meta, artifact)
        new = await asyncio.to_thread(ml["anomalies"].add, project, artifact.anomalies)
    _publish(request.app.state, project, new)
    ml["streaming"].pop(project, None)
    return {"project_id": project, **meta, "anomalies_new": len(new)}


@get("/api/v1/ml/models", opt={"scope": "read"}, summary="Model versions", tags=["ml"])
async def models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    ml = _ml(request)
    project = _project(request)
    runs = await asyncio.to_thread(ml["registry"].runs, project)
    current = ml["service"].current(project)
    return {
        "project_id": project,
        "current_version": current[0]["version"] if current else None,
        "versions": list(reversed(runs)),
    }


@get(
    "/api/v1/users/{user_id:str}/predictions",
    opt={"scope": "read"},
    summary="Churn, conversion, recommendations, next best action and CLV of one user",
    tags=["ml", "users"],
    sync_to_thread=False,
)
def predictions(request: Request[Any, Any, Any], user_id: str) -> dict[str, Any]:
    # Synchronous on purpose: a precomputed lookup; only fallbacks query the store.
    prediction: dict[str, Any] = _ml(request)["service"].predict(_project(request), user_id)
    return prediction


@get(
    "/api/v1/ml/products/{product_id:str}/also-bought",
    opt={"scope": "read"},
    summary="Products bought together with this one",
    tags=["ml"],
    sync_to_thread=False,
)
def also_bought(
    request: Request[Any, Any, Any],
    product_id: str,
    limit: Annotated[int, Parameter(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    found: dict[str, Any] = _ml(request)["service"].also_bought(
        _project(request), product_id, limit
    )
    return found


def _bucket_time(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            f"{name} must be an RFC 3339 time", details=[{"path": name, "message": value}]
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


@get(
    "/api/v1/ml/anomalies",
    opt={"scope": "read"},
    summary="Detected metric anomalies, newest first",
    description="Filters: `metric`, `detector` (seasonal|streaming), `since`, `until` "
    "(RFC 3339, on the bucket start), `limit` (1-1000, default 100).",
    tags=["ml"],
)
async def anomalies(
    request: Request[Any, Any, Any],
    metric: str | None = None,
    detector: Literal["seasonal", "streaming"] | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    rows = await asyncio.to_thread(
        _ml(request)["anomalies"].query,
        _project(request),
        metric=metric,
        detector=detector,
        since=_bucket_time("since", since),
        until=_bucket_time("until", until),
        limit=limit,
    )
    return {"anomalies": rows, "count": len(rows)}


ROUTES = [train, models, predictions, also_bought, anomalies]


def setup(ctx: AppContext) -> None:
    registry = open_model_registry(ctx.settings)
    live = LiveSessions()
    ctx.ingest.listeners.append(live)
    get_bus(ctx.state)
    ctx.state["ml"] = {
        "store": ctx.store,
        # Training runs in a process of its own (started per run, so its memory goes back to
        # the system), like reports (docs/ml.md); held to AVILA_QUERY_TIMEOUT per read only.
        "trainer": QueryWorkers(
            ctx.store, min(1, ctx.settings.query_workers), whole_job_limit=False, fresh=True
        ),
        "registry": registry,
        "service": PredictionService(ctx.store, registry, live),
        "anomalies": AnomalyLog(ctx.store),
        "locks": {},
        "streaming": {},
        "task": None,
    }


async def startup(ctx: AppContext) -> None:
    ml = ctx.state["ml"]
    loaded = await asyncio.to_thread(ml["service"].load_all)
    log.info("ml models loaded", extra={"projects": loaded})
    old_log = ctx.settings.data_dir / "models" / "anomalies.sqlite"
    if old_log.exists():
        moved = await asyncio.to_thread(ml["anomalies"].adopt_sqlite, old_log)
        log.info("anomalies moved into the store", extra={"anomalies": moved, "from": str(old_log)})
    ml["task"] = asyncio.get_running_loop().create_task(_monitor(ctx), name="ml-monitor")
    if ml["registry"].changes_elsewhere:
        ml["refresh"] = asyncio.get_running_loop().create_task(
            _refresh(ml["service"]), name="ml-refresh"
        )


async def shutdown(ctx: AppContext) -> None:
    ml = ctx.state["ml"]
    for name in ("task", "refresh"):
        task = ml.get(name)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await asyncio.to_thread(ml["trainer"].close)


def _check_minute(ctx: AppContext, project: str, minute: datetime) -> list[dict[str, Any]]:
    """Streaming detector on the last completed minute (warmed on the previous 6 hours)."""
    ml = ctx.state["ml"]
    detector: StreamingAnomalyDetector | None = ml["streaming"].get(project)
    start = minute - timedelta(minutes=1) if detector is not None else minute - timedelta(hours=6)
    frame = metric_series(ctx.store, project, start, minute, bucket_seconds=60)
    found, detector = streaming_anomalies(frame, detector)
    ml["streaming"][project] = detector
    current = ml["service"].current(project)
    if current is not None and minute.minute == 0:
        hour = minute - timedelta(hours=1)
        hourly = metric_series(ctx.store, project, hour, minute)
        for metric, det in current[1].seasonal.items():
            if metric in hourly:
                found.extend(score_hours(metric, det, hourly[metric]))
    new: list[dict[str, Any]] = ml["anomalies"].add(project, found)
    return new


async def _monitor(ctx: AppContext) -> None:
    ml = ctx.state["ml"]
    while True:
        await asyncio.sleep(MONITOR_INTERVAL_SECONDS)
        minute = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
        for project in ml["service"].projects():
            try:
                new = await asyncio.to_thread(_check_minute, ctx, project, minute)
            except Exception:
                log.exception("anomaly monitor failed", extra={"project": project})
                continue
            _publish(ctx.state, project, new)


async def _refresh(service: PredictionService) -> None:
    """Pick up runs trained on other replicas (shared registry only)."""
    while True:
        await asyncio.sleep(MODEL_REFRESH_SECONDS)
        try:
            changed = await asyncio.to_thread(service.refresh)
        except Exception:
            log.warning("model refresh failed; retrying", exc_info=True)
            continue
        if changed:
            log.info("ml models refreshed", extra={"projects": changed})


def get_service(ctx: AppContext) -> PredictionService:
    """The prediction service (e.g. for erasure: ``get_service(ctx).forget(project, user)``)."""
    service: PredictionService | None = ctx.state.get("ml", {}).get("service")
    if service is None:
        raise NotFound("ml module not set up", code="ml_not_configured")
    return service
