"""``/api/v1/industry40/...``: telemetry, devices, twins, alarms and the KPI endpoints.

Thin handlers: the domain lives in :mod:`avila.industry40`. Store reads run in a worker thread.
Formulas, reserved metric names and a curl call per endpoint: docs/industry40.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import MediaType, Request, Response, get, post, put
from litestar.params import Parameter
from msgspec import Meta, Struct

from avila.api.component import AppContext
from avila.errors import ValidationFailed
from avila.industry40 import records
from avila.industry40.alarms import AlarmRules, AlarmService
from avila.industry40.anomaly import detect_anomalies
from avila.industry40.devices import DeviceRegistry, rfc3339
from avila.industry40.ingestion import TelemetryService
from avila.industry40.maintenance import predict_maintenance
from avila.industry40.mqtt import MqttBridge
from avila.industry40.oee import calculate_oee
from avila.industry40.quality import inspect_quality
from avila.industry40.reports import recorded_energy, recorded_maintenance, recorded_oee
from avila.industry40.telemetry import MAX_READINGS
from avila.industry40.twins import TwinService, etag
from avila.live.bus import LiveBus, get_bus
from avila.schemas.industry40 import (
    MaintenancePredictRequest,
    OeeRequest,
    ProductionOptimizeRequest,
    QualityInspectRequest,
)
from avila.shared import ALARM_STATES_KEY, CHANGES_KEY
from avila.storage.base import Store

log = logging.getLogger("avila.industry40")

PREFIX = "/api/v1/industry40"
MAX_BODY = 10 * 1024 * 1024
TAGS = ["industry40"]
_encode = msgspec.json.encode


@dataclass
class Industry40:
    store: Store
    registry: DeviceRegistry
    telemetry: TelemetryService
    alarms: AlarmService
    twins: TwinService
    bus: LiveBus
    bridge: MqttBridge | None = None


def setup(ctx: AppContext) -> None:
    registry = DeviceRegistry(ctx.store)
    telemetry = TelemetryService(ctx.store, registry)
    bus = get_bus(ctx.state)
    alarms = AlarmService(
        ctx.store, registry, bus, ctx.state.get(CHANGES_KEY), ctx.state.get(ALARM_STATES_KEY)
    )
    telemetry.listeners.append(alarms)
    ctx.state["industry40"] = Industry40(
        ctx.store, registry, telemetry, alarms, TwinService(ctx.store, registry, alarms), bus
    )


async def startup(ctx: AppContext) -> None:
    i40: Industry40 = ctx.state["industry40"]
    await i40.telemetry.start()
    await asyncio.to_thread(i40.alarms.start)  # loads, then follows other replicas
    settings = ctx.settings
    if settings.mqtt_url:
        i40.bridge = MqttBridge(
            settings.mqtt_url,
            i40.telemetry,
            client_id=settings.mqtt_client_id,
            share_group=settings.mqtt_share_group,
            metrics=ctx.metrics,
        )
    if i40.bridge is not None:
        await i40.bridge.start()


async def shutdown(ctx: AppContext) -> None:
    i40: Industry40 = ctx.state["industry40"]
    if i40.bridge is not None:
        await i40.bridge.stop()
    await i40.telemetry.close()
    await asyncio.to_thread(i40.alarms.close)


DEPENDENCIES = {"i40": lambda state: state["industry40"]}


def _project(request: Request[Any, Any, Any]) -> str:
    return str(request.state.principal.project_id)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(_encode(body), status_code=status, media_type=MediaType.JSON, headers=headers)


# --- telemetry and devices -------------------------------------------------------------------


@post(
    f"{PREFIX}/iot/ingest",
    opt={"scope": "ingest"},
    request_max_body_size=MAX_BODY,
    summary="Ingest IoT readings",
    description=(
        'Body: one reading `{"device_id", "device_type"?, "timestamp"?, "metrics": {name: number},'
        ' "attributes"?}` or `{"readings": [...]}` (at most '
        f"{MAX_READINGS:,}). 202 `{{accepted, rejected: [{{index, code, message, path}}],"
        " stored_values}}` once the valid readings are durable; a single bad reading is a 422."
    ),
    tags=TAGS,
)
async def ingest(request: Request[Any, Any, Any], i40: Industry40) -> Response[bytes]:
    result, single = await i40.telemetry.ingest_body(await request.body(), _project(request))
    if single and result.rejected:
        r = result.rejected[0]
        raise ValidationFailed(
            r.message, code=r.code, details=[{"path": r.path, "message": r.message}]
        )
    return _json(result.to_dict(), 202)


@get(f"{PREFIX}/devices", opt={"scope": "read"}, summary="List devices", tags=TAGS)
async def list_devices(request: Request[Any, Any, Any], i40: Industry40) -> dict[str, Any]:
    devices = i40.registry.devices(_project(request))
    return {"devices": [d.to_dict() for d in devices], "count": len(devices)}


@get(f"{PREFIX}/topology", opt={"scope": "read"}, summary="Sites > lines > machines", tags=TAGS)
async def topology(request: Request[Any, Any, Any], i40: Industry40) -> dict[str, Any]:
    return i40.registry.topology(_project(request))


class DeviceUpdate(Struct, kw_only=True):
    device_type: Annotated[str, Meta(max_length=128)] | None = None
    attributes: dict[str, Any] | None = None


@put(
    f"{PREFIX}/devices/{{device_id:str}}",
    opt={"scope": "ingest"},
    summary="Set a device's type and attributes (site, line, machine, ideal_cycle_time_ms ...)",
    tags=TAGS,
)
async def update_device(
    request: Request[Any, Any, Any], i40: Industry40, device_id: str, data: DeviceUpdate
) -> dict[str, Any]:
    device = await asyncio.to_thread(
        i40.registry.update,
        _project(request),
        device_id,
        device_type=data.device_type,
        attributes=data.attributes,
    )
    return device.to_dict()


# --- twins -----------------------------------------------------------------------------------


@get(f"{PREFIX}/twin/{{device_id:str}}", opt={"scope": "read"}, summary="Digital twin", tags=TAGS)
async def get_twin(
    request: Request[Any, Any, Any], i40: Industry40, device_id: str
) -> Response[bytes]:
    twin = await asyncio.to_thread(i40.twins.get, _project(request), device_id)
    return _json(twin, headers={"ETag": etag(twin["version"])})


@put(
    f"{PREFIX}/twin/{{device_id:str}}/desired",
    opt={"scope": "ingest"},
    summary="Replace the twin's desired state",
    description="Send `If-Match: <ETag from GET>` for optimistic concurrency: 412 on mismatch.",
    tags=TAGS,
)
async def put_desired(
    request: Request[Any, Any, Any], i40: Industry40, device_id: str, data: dict[str, Any]
) -> Response[bytes]:
    project = _project(request)
    version = await asyncio.to_thread(
        i40.twins.put_desired, project, device_id, data, request.headers.get("if-match")
    )
    return _json(
        {"device_id": device_id, "desired": data, "version": version},
        headers={"ETag": etag(version)},
    )


@get(
    f"{PREFIX}/twin/{{device_id:str}}/history",
    opt={"scope": "read"},
    summary="Metric history (raw or 1 min / 1 h rollups)",
    tags=TAGS,
)
async def twin_history(
    request: Request[Any, Any, Any],
    i40: Industry40,
    device_id: str,
    metric: list[str] | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    resolution: Literal["raw", "1m", "1h", "auto"] = "auto",
) -> dict[str, Any]:
    project = _project(request)
    i40.registry.require(project, device_id)
    start, end = records.window(start_time, end_time, timedelta(hours=24))
    out = await asyncio.to_thread(
        records.series, i40.store, project, device_id, metric, start, end, resolution
    )
    return {
        "device_id": device_id,
        "start_time": rfc3339(start),
        "end_time": rfc3339(end),
        **out,
    }


@get(
    f"{PREFIX}/twin/{{device_id:str}}/forecast",
    opt={"scope": "read"},
    summary="Short-horizon forecast of one metric (linear trend + 95 % band)",
    tags=TAGS,
)
async def twin_forecast(
    request: Request[Any, Any, Any],
    i40: Industry40,
    device_id: str,
    metric: str,
    horizon_minutes: Annotated[float, Parameter(gt=0, le=10080)] = 60.0,
) -> dict[str, Any]:
    return await asyncio.to_thread(
        i40.twins.forecast, _project(request), device_id, metric, horizon_minutes
    )


# --- KPI endpoints ---------------------------------------------------------------------------


class MaintenanceBody(MaintenancePredictRequest, kw_only=True):
    lookback_hours: Annotated[float, Meta(gt=0, le=24 * 365)] = 720.0


@post(
    f"{PREFIX}/maintenance/predict",
    opt={"scope": "read"},
    status_code=200,
    summary="Failure risk and remaining useful life",
    tags=TAGS,
)
async def maintenance(
    request: Request[Any, Any, Any], i40: Industry40, data: MaintenanceBody
) -> dict[str, Any]:
    if data.metrics is not None:
        return await asyncio.to_thread(predict_maintenance, data)
    return await asyncio.to_thread(
        recorded_maintenance,
        i40.store,
        i40.registry,
        i40.alarms,
        _project(request),
        data.device_id,
        horizon_hours=data.horizon_hours,
        lookback_hours=data.lookback_hours,
    )


class OeeBody(OeeRequest, kw_only=True):
    ideal_cycle_time_ms: Annotated[float, Meta(gt=0, le=1e12)] | None = None


@post(f"{PREFIX}/oee/calculate", opt={"scope": "read"}, status_code=200, summary="OEE", tags=TAGS)
async def oee(request: Request[Any, Any, Any], i40: Industry40, data: OeeBody) -> dict[str, Any]:
    if data.production_data is not None:
        return {"device_id": data.device_id, **calculate_oee(data.production_data)}
    if data.start_time is None and data.end_time is None:
        raise ValidationFailed(
            "send production_data, or start_time/end_time to use recorded data",
            code="oee_needs_data",
            details=[{"path": "$.production_data", "message": "missing"}],
        )
    start, end = records.window(data.start_time, data.end_time, timedelta(hours=24))
    return await asyncio.to_thread(
        recorded_oee,
        i40.store,
        i40.registry,
        _project(request),
        data.device_id,
        start,
        end,
        data.ideal_cycle_time_ms,
    )


@post(
    f"{PREFIX}/quality/inspect",
    opt={"scope": "read"},
    status_code=200,
    summary="SPC chart, run rules and capability",
    tags=TAGS,
)
async def quality(data: QualityInspectRequest) -> dict[str, Any]:
    return await asyncio.to_thread(inspect_quality, data)


@get(
    f"{PREFIX}/energy/consumption",
    opt={"scope": "read"},
    summary="kWh per device and day, peak demand, specific energy, CO2",
    tags=TAGS,
)
async def energy(
    request: Request[Any, Any, Any],
    i40: Industry40,
    device_id: str | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    co2_kg_per_kwh: Annotated[float, Parameter(ge=0, le=10)] | None = None,
    tz: str = "UTC",
) -> dict[str, Any]:
    start, end = records.window(start_time, end_time, timedelta(days=7))
    return await asyncio.to_thread(
        recorded_energy,
        i40.store,
        _project(request),
        device_id,
        start,
        end,
        co2_kg_per_kwh=co2_kg_per_kwh,
        tz=tz,
    )


@post(
    f"{PREFIX}/optimize/production",
    opt={"scope": "read"},
    status_code=200,
    summary="Schedule orders on machines (CP-SAT); 422 names the infeasible constraint",
    tags=TAGS,
)
async def optimize(data: ProductionOptimizeRequest) -> dict[str, Any]:
    from avila.industry40.optimize import optimize_production

    workers = max(1, min(8, os.cpu_count() or 1))
    return await asyncio.to_thread(optimize_production, data, num_workers=workers)


class AnomalyBody(Struct, kw_only=True):
    """A series (``values``) or a device's metric over a window (``device_id`` + ``metric``)."""

    values: list[Annotated[float, Meta(ge=-1e15, le=1e15)]] | None = None
    timestamps: list[datetime] | None = None
    device_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    metric: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    window: Annotated[int, Meta(ge=3, le=100_000)] = 30
    threshold: Annotated[float, Meta(gt=0)] = 3.5
    min_periods: Annotated[int, Meta(ge=3)] | None = None
    publish: bool = True


MAX_PUBLISHED_ANOMALIES = 100


@post(
    f"{PREFIX}/anomaly/detect",
    opt={"scope": "read"},
    status_code=200,
    summary="Anomalous points (rolling robust z-score); published as alerts",
    tags=TAGS,
)
async def anomaly(
    request: Request[Any, Any, Any], i40: Industry40, data: AnomalyBody
) -> dict[str, Any]:
    project = _project(request)
    params = {"window": data.window, "threshold": data.threshold, "min_periods": data.min_periods}
    if data.values is not None:
        body: dict[str, Any] = {"values": data.values, "timestamps": data.timestamps, **params}
    elif data.device_id and data.metric:
        i40.registry.require(project, data.device_id)
        start, end = records.window(data.start_time, data.end_time, timedelta(hours=24))
        t_us, values = await asyncio.to_thread(
            records.values_of, i40.store, project, data.device_id, data.metric, start, end
        )
        if not values:
            raise ValidationFailed(
                f"no readings of {data.metric!r} in the window",
                code="anomaly_no_data",
                details=[{"path": "$.metric", "message": "no readings"}],
            )
        body = {"values": values, "timestamps": [records.from_us(t) for t in t_us], **params}
    else:
        raise ValidationFailed(
            "send values, or device_id and metric",
            code="anomaly_needs_series",
            details=[{"path": "$.values", "message": "missing"}],
        )
    out = await asyncio.to_thread(detect_anomalies, body)
    out["device_id"], out["metric"] = data.device_id, data.metric
    if data.publish:
        for a in out["anomalies"][:MAX_PUBLISHED_ANOMALIES]:
            i40.bus.publish(
                project,
                "alerts",
                {"type": "anomaly", "device_id": data.device_id, "metric": data.metric, **a},
            )
    return out


# --- alarms ----------------------------------------------------------------------------------


@get(f"{PREFIX}/alarms/rules", opt={"scope": "read"}, summary="Threshold alarm rules", tags=TAGS)
async def alarm_rules(request: Request[Any, Any, Any], i40: Industry40) -> dict[str, Any]:
    return {"rules": i40.alarms.rules(_project(request))}


@put(
    f"{PREFIX}/alarms/rules/{{device_type:str}}",
    opt={"scope": "admin"},
    summary="Set the threshold alarm rules of a device type",
    tags=TAGS,
)
async def set_alarm_rules(
    request: Request[Any, Any, Any], i40: Industry40, device_type: str, data: AlarmRules
) -> dict[str, Any]:
    project = _project(request)
    cleared = await asyncio.to_thread(i40.alarms.set_rules, project, device_type, data)
    for alert in cleared:
        i40.bus.publish(project, "alerts", alert)
    return {
        "device_type": device_type,
        "rules": i40.alarms.rules(project, device_type)[device_type],
    }


@get(f"{PREFIX}/alarms/active", opt={"scope": "read"}, summary="Alarms in breach now", tags=TAGS)
async def active_alarms(request: Request[Any, Any, Any], i40: Industry40) -> dict[str, Any]:
    project = _project(request)
    if i40.alarms.states.remote:
        alarms = await asyncio.to_thread(i40.alarms.active, project)
    else:
        alarms = i40.alarms.active(project)
    return {"alarms": alarms, "count": len(alarms)}


ROUTES = [
    ingest,
    list_devices,
    topology,
    update_device,
    get_twin,
    put_desired,
    twin_history,
    twin_forecast,
    maintenance,
    oee,
    quality,
    energy,
    optimize,
    anomaly,
    alarm_rules,
    set_alarm_rules,
    active_alarms,
]
