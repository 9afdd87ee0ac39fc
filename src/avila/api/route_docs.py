"""What Litestar cannot see in a handler's signature, for :mod:`avila.api.openapi`.

Routes that read their body raw (ingestion, export, Segment), answer another status than their
decorator says, or return other content types are described here by a :class:`RouteDoc`, keyed
by (METHOD, path template) in :data:`ROUTE_DOCS`; a new handler may instead carry
``opt={"openapi": RouteDoc(...)}``. The request/response Structs below exist only to generate
the document's schemas (the routes decode with their own msgspec types).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from avila.schemas.events import Context

REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class RouteDoc:
    """What Litestar cannot see in a handler's signature.

    ``body``/``response`` are msgspec types (or JSON Schema dicts); ``content`` maps extra
    success media types to schemas; ``errors`` adds error statuses; ``only_errors`` replaces
    the derived set; ``auth`` is ``"key"`` (the default when the handler has a scope),
    ``"segment"`` or ``"none"``.
    """

    body: Any = None
    body_required: bool = True
    status: int | None = None
    response: Any = None
    content: dict[str, Any] | None = None
    extra_success: dict[int, str] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    only_errors: tuple[int, ...] | None = None
    auth: Literal["key", "segment", "none"] | None = None


# --- documentation types for raw-body routes -------------------------------------------------


class EventDoc(Struct, kw_only=True):
    """One event (the seed's shape); see docs/ingestion.md. ``event_type`` is a ``{type,
    data}`` pair whose ``data`` shape depends on ``type``."""

    user_id: Annotated[str, Meta(min_length=1, max_length=256)]
    event_type: dict[str, Any]
    event_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    session_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    timestamp: datetime | None = None
    metadata: dict[str, Any] | None = None
    context: Context | None = None


class SingleEventRequest(Struct):
    event: EventDoc


class BatchEventRequest(Struct):
    events: Annotated[list[EventDoc], Meta(min_length=1, max_length=10_000)]


class IngestRejection(Struct):
    index: int
    code: str
    message: str
    path: str


class SingleIngestResult(Struct):
    accepted: int
    duplicates: int
    event_ids: list[str]


class BatchIngestResult(Struct):
    accepted: int
    duplicates: int
    event_ids: list[str]
    rejected: list[IngestRejection]


class ReadingDoc(Struct, kw_only=True):
    device_id: Annotated[str, Meta(min_length=1, max_length=256)]
    metrics: Annotated[dict[str, float], Meta(min_length=1, max_length=1000)]
    device_type: Annotated[str, Meta(max_length=128)] | None = None
    timestamp: datetime | None = None
    attributes: dict[str, Any] | None = None


class ReadingBatchRequest(Struct):
    readings: Annotated[list[ReadingDoc], Meta(min_length=1, max_length=10_000)]


class TelemetryIngestResult(Struct):
    accepted: int
    rejected: list[IngestRejection]
    stored_values: int


class ExportFiltersDoc(Struct, kw_only=True):
    user_ids: list[str] | None = None
    event_types: list[str] | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    properties: dict[str, Any] | list[dict[str, Any]] | None = None


class ExportRequestDoc(Struct, kw_only=True):
    format: Literal["csv", "json", "ndjson", "parquet"]
    filters: ExportFiltersDoc | None = None


SegmentId = str | int | float | None  # Segment libraries send numeric ids; they are coerced


class SegmentMessage(Struct, kw_only=True):
    """A Segment message (track/identify/page/screen/group/alias); see docs/segment.md."""

    type: str | None = None
    userId: SegmentId = None  # noqa: N815 - Segment's field names
    anonymousId: SegmentId = None  # noqa: N815
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    timestamp: str | None = None
    messageId: str | None = None  # noqa: N815
    writeKey: str | None = None  # noqa: N815


class SegmentBatch(Struct, kw_only=True):
    """Envelope fields of another type are ignored, as Segment's API does."""

    batch: list[SegmentMessage]
    sentAt: str | None = None  # noqa: N815
    writeKey: str | None = None  # noqa: N815
    context: Any = None
    integrations: Any = None


class SegmentResult(Struct, kw_only=True):
    success: bool
    accepted: int | None = None
    duplicates: int | None = None
    rejected: list[IngestRejection] | None = None


class HealthBody(Struct):
    status: str
    storage: str
    version: str


# --- response bodies of the main read routes (the fields API.md names; others may be added) --


class UrlViews(Struct):
    url: str | None
    views: int


class FunnelStepResult(Struct):
    name: str
    count: int
    conversion_rate: float
    step_conversion_rate: float
    drop_off: int
    median_time_to_convert_seconds: float | None
    avg_time_to_convert_seconds: float | None


class FunnelBreakdown(Struct):
    value: Any
    steps: list[FunnelStepResult]


class FunnelResult(Struct, kw_only=True):
    funnel_name: str
    steps: list[FunnelStepResult]
    overall_conversion_rate: float
    total_users: int
    breakdowns: list[FunnelBreakdown] | None = None


class Cohort(Struct):
    cohort_start: str
    size: int
    retained: list[int]
    rates: list[float]
    periods_observed: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "How many of the cohort's periods (from period 0) began before end_time, in"
                " `timezone`. The retained/rates entries from this index on are periods the"
                " range has not lived: 0 while they are in the future (with a past end_time,"
                " the returns stored after it); no measurement of the range."
            ),
        ),
    ]


class CohortResult(Struct):
    period: str
    cohorts: list[Cohort]


class DailyUsers(Struct):
    date: str
    users: int


class OverviewResult(Struct):
    total_events: int
    unique_users: int
    sessions: int
    events_by_type: dict[str, int]
    top_pages: list[UrlViews]
    revenue: float
    dau: list[DailyUsers]
    bounce_rate: float
    avg_session_duration_seconds: float


class RealtimeResult(Struct):
    events_last_minute: int
    events_last_5_minutes: int
    active_users_last_5_minutes: int
    events_per_second: float
    top_pages: list[dict[str, Any]]


class RfmSegment(Struct):
    segment: str
    users: int
    share: float
    revenue: float
    #: present when the request asked for ``members`` > 0
    members: list[UserSegment] | None = None


class RfmResult(Struct):
    segments: list[RfmSegment]
    users_scored: int


class SessionsResult(Struct):
    sessions: int
    avg_duration_seconds: float
    bounce_rate: float
    pages_per_session: float
    by_day: list[dict[str, Any]]


class UserProfile(Struct):
    user_id: str
    first_seen: str | None
    last_seen: str | None
    total_events: int
    sessions: int
    total_revenue: float
    events_by_type: dict[str, int]
    top_pages: list[UrlViews]
    devices: list[dict[str, Any]]
    locations: list[dict[str, Any]]
    recent_events: list[dict[str, Any]]


class UserSegment(Struct):
    user_id: str
    recency_days: float | None
    frequency: int
    monetary: float
    r_score: int | None
    f_score: int | None
    m_score: int | None
    rfm_score: str | None
    segment: str | None


class Recommendation(Struct):
    product_id: str
    score: float


class UserPredictions(Struct):
    user_id: str
    churn_probability: float | None
    conversion_probability: float | None
    recommendations: list[Recommendation]
    next_best_action: dict[str, Any] | None
    model_versions: dict[str, Any]
    #: why a number above is null: ``{field: {"code", "message"}}`` (empty when none is)
    unavailable: dict[str, dict[str, str]]


class ErasureResult(Struct):
    deleted_events: int


_SEGMENT_ERRORS = (400, 401, 403, 429, 503)
_EXPORT_CONTENT: dict[str, Any] = {
    "text/csv": {"type": "string"},
    "application/json": {"type": "array", "items": {"type": "object"}},
    "application/x-ndjson": {"type": "string"},
    "application/vnd.apache.parquet": {"type": "string", "format": "binary"},
}

#: Overrides by (METHOD, path template). New handlers may instead set ``opt={"openapi": ...}``.
ROUTE_DOCS: dict[tuple[str, str], RouteDoc] = {
    ("POST", "/api/v1/events"): RouteDoc(
        body=SingleEventRequest, status=202, response=SingleIngestResult
    ),
    ("POST", "/api/v1/events/batch"): RouteDoc(
        body=BatchEventRequest, status=202, response=BatchIngestResult
    ),
    ("POST", "/api/v1/industry40/iot/ingest"): RouteDoc(
        body={
            "oneOf": [
                {"$ref": REF.format(name="ReadingDoc")},
                {"$ref": REF.format(name="ReadingBatchRequest")},
            ]
        },
        status=202,
        response=TelemetryIngestResult,
    ),
    ("POST", "/api/v1/export"): RouteDoc(body=ExportRequestDoc, content=_EXPORT_CONTENT),
    ("POST", "/api/v1/ml/train"): RouteDoc(
        body={
            "type": "object",
            "properties": {
                "churn_horizon_days": {"type": ["integer", "null"]},
                "conversion_horizon_days": {"type": ["integer", "null"]},
            },
            "additionalProperties": False,
        },
        body_required=False,
    ),
    ("GET", "/health"): RouteDoc(response=HealthBody, only_errors=(503,)),
    ("GET", "/metrics"): RouteDoc(
        content={"text/plain": {"type": "string"}}, only_errors=(), auth="none"
    ),
    ("GET", "/avila.js"): RouteDoc(
        content={"text/javascript": {"type": "string"}},
        extra_success={304: "Not modified (ETag matched)"},
        only_errors=(),
        auth="none",
    ),
    ("PUT", "/api/v1/industry40/twin/{device_id}/desired"): RouteDoc(errors=(412,)),
    ("POST", "/api/v1/analytics/funnel"): RouteDoc(response=FunnelResult),
    ("POST", "/api/v1/analytics/cohort"): RouteDoc(response=CohortResult),
    ("POST", "/api/v1/analytics/rfm"): RouteDoc(response=RfmResult),
    ("GET", "/api/v1/analytics/overview"): RouteDoc(response=OverviewResult),
    ("GET", "/api/v1/analytics/realtime"): RouteDoc(response=RealtimeResult),
    ("GET", "/api/v1/analytics/sessions"): RouteDoc(response=SessionsResult),
    ("GET", "/api/v1/users/{user_id}"): RouteDoc(response=UserProfile),
    ("GET", "/api/v1/users/{user_id}/segment"): RouteDoc(response=UserSegment),
    ("GET", "/api/v1/users/{user_id}/predictions"): RouteDoc(response=UserPredictions),
    ("DELETE", "/api/v1/users/{user_id}"): RouteDoc(response=ErasureResult),
}
_SEGMENT_SINGLE = RouteDoc(
    body=SegmentMessage, response=SegmentResult, only_errors=_SEGMENT_ERRORS, auth="segment"
)
_SEGMENT_BATCH = RouteDoc(
    body=SegmentBatch, response=SegmentResult, only_errors=_SEGMENT_ERRORS, auth="segment"
)
for _kind in (
    "track",
    "identify",
    "page",
    "screen",
    "group",
    "alias",
    "t",
    "i",
    "p",
    "s",
    "g",
    "a",
):
    ROUTE_DOCS[("POST", f"/v1/{_kind}")] = _SEGMENT_SINGLE
for _kind in ("batch", "import", "b"):
    ROUTE_DOCS[("POST", f"/v1/{_kind}")] = _SEGMENT_BATCH

DOC_TYPES: tuple[Any, ...] = (
    SingleEventRequest,
    BatchEventRequest,
    SingleIngestResult,
    BatchIngestResult,
    ReadingDoc,
    ReadingBatchRequest,
    TelemetryIngestResult,
    ExportRequestDoc,
    SegmentMessage,
    SegmentBatch,
    SegmentResult,
    HealthBody,
    FunnelResult,
    CohortResult,
    RfmResult,
    OverviewResult,
    RealtimeResult,
    SessionsResult,
    UserProfile,
    UserSegment,
    UserPredictions,
    ErasureResult,
)
