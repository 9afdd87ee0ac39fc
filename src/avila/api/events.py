"""POST /api/v1/events and /api/v1/events/batch.

Bodies are read raw and decoded with msgspec here rather than by the framework: each event is
validated on its own (partial acceptance, per-index rejections) and the hot path stays lean.
A gzip body (``Content-Encoding: gzip``) is inflated first (:mod:`avila.api.bodies`); the
route's size limit holds for the body as sent and as inflated.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, Response, post

from avila.api.bodies import decoded
from avila.errors import MalformedJSON, PayloadTooLarge, ValidationFailed
from avila.ingest.batch_split import split_events
from avila.ingest.service import IngestService, result_body
from avila.ingest.validation import MAX_EVENT_BYTES, NESTED_TOO_DEEPLY
from avila.schemas.events import BATCH_DECODER, SINGLE_DECODER
from avila.schemas.messages import split_msgspec_error

MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 10 * 1024 * 1024
# The single-event body is the event plus its {"event": ...} wrapper.
MAX_SINGLE_BYTES = MAX_EVENT_BYTES + 1024

_encode = msgspec.json.encode


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except RecursionError:
        raise ValidationFailed(
            f"request body cannot be read: {NESTED_TOO_DEEPLY}",
            details=[{"path": "", "message": NESTED_TOO_DEEPLY}],
        ) from None
    except msgspec.DecodeError as exc:
        if isinstance(exc, msgspec.ValidationError):
            message, path = split_msgspec_error(exc, "")
            raise ValidationFailed(
                f"request body does not match the schema: {message}",
                details=[{"path": path.lstrip(".") or "$", "message": message}],
            ) from None
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None


async def _body(request: Request[Any, Any, Any], limit: int) -> bytes:
    return decoded(await request.body(), request.headers.get("content-encoding", ""), limit)


def _accepted(body: dict[str, Any]) -> Response[bytes]:
    return Response(_encode(body), status_code=202, media_type=MediaType.JSON)


@post(
    "/api/v1/events",
    opt={"scope": "ingest"},
    request_max_body_size=MAX_SINGLE_BYTES,
    summary="Ingest one event",
    description='Body `{"event": EVENT}`. 202 once the event is durably stored.',
    tags=["events"],
)
async def ingest_event(request: Request[Any, Any, Any], ingest: IngestService) -> Response[bytes]:
    body = _decode(SINGLE_DECODER, await _body(request, MAX_SINGLE_BYTES))
    result = await ingest.ingest(
        [body.event], request.state.principal.project_id, path_prefix="event", single=True
    )
    if result.rejected:
        rejection = result.rejected[0]
        raise ValidationFailed(
            rejection.message,
            code=rejection.code,
            details=[{"path": rejection.path, "message": rejection.message}],
        )
    return _accepted(result_body(result, batch=False))


@post(
    "/api/v1/events/batch",
    opt={"scope": "ingest"},
    request_max_body_size=MAX_BATCH_BYTES,
    summary="Ingest up to 10,000 events",
    description=(
        'Body `{"events": [EVENT, ...]}`. Valid events are stored even when others are '
        "rejected; 202 once they are durable."
    ),
    tags=["events"],
)
async def ingest_batch(request: Request[Any, Any, Any], ingest: IngestService) -> Response[bytes]:
    raw = await _body(request, MAX_BATCH_BYTES)
    events: list[msgspec.Raw | bytes]
    try:
        events = list(_decode(BATCH_DECODER, raw).events)
    except (MalformedJSON, ValidationFailed):
        # One unreadable event must not cost the others: split the array and let each be
        # validated (and the unreadable ones rejected) on its own.
        split = split_events(raw)
        if not split:
            raise
        events = list(split)
    if len(events) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(
            f"batch has {len(events)} events; the limit is {MAX_BATCH_EVENTS}",
            code="batch_too_large",
        )
    result = await ingest.ingest(events, request.state.principal.project_id)
    return _accepted(result_body(result, batch=True))


ROUTES = [ingest_event, ingest_batch]
