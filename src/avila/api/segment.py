"""Segment-compatible HTTP Tracking API: POST /v1/{track,identify,page,screen,group,alias,batch}.

Point a Segment library's host (or analytics.js's ``apiHost``) at this server and use one of
our API keys with the ``ingest`` scope as the write key (docs/segment.md). Messages become
events through :mod:`avila.ingest.segment` and take the normal ingestion path, so ``messageId``
deduplicates like our ``event_id``.

Errors follow Segment's API where clients depend on it: oversize bodies and invalid JSON are
400 (not our usual 413/422), success is 200 ``{"success": true}``. The error body is our usual
``{"error": {...}}`` shape. Unlike Segment, a single call whose message cannot become an event
(no userId/anonymousId, no event name ...) is 400 rather than silently dropped; in a batch such
messages are listed under ``rejected`` and the rest are stored.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from litestar import MediaType, Request, Response, post
from litestar.connection import ASGIConnection

from avila.api.bodies import decoded
from avila.api.security import authenticate, presented_key
from avila.errors import (
    BadRequest,
    MalformedJSON,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from avila.ingest import lenient_json
from avila.ingest.segment import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    Envelope,
    MessageError,
    parse_time,
    to_event,
)
from avila.ingest.service import IngestService
from avila.ingest.validation import NESTED_TOO_DEEPLY, Rejection
from avila.security.keys import Principal

# analytics.js posts to one-letter paths (/v1/t, /v1/p ...); both spellings are accepted.
_SHORT = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}
_encode = msgspec.json.encode
_LEADING_INDEX = re.compile(r"^\[\d+\]")


def _relative(path: str) -> str:
    """A validator path (``[0].event_type.data.name``) relative to its event."""
    return _LEADING_INDEX.sub("", path).lstrip(".")


# Avila event field -> the Segment message field it came from (first matching prefix wins).
_MESSAGE_FIELDS = (
    ("event_id", "messageId"),
    ("session_id", "context.sessionId"),
    ("event_type.data.properties.previous_id", "previousId"),
    ("event_type.data.properties.group_id", "groupId"),
    ("event_type.data.properties.traits", "traits"),
    ("event_type.data.url", "properties.url"),
    ("event_type.data.title", "properties.title"),
    ("metadata.anonymous_id", "anonymousId"),
    ("metadata.integrations", "integrations"),
    ("context.user_agent", "context.userAgent"),
    ("context.referrer", "context.page.referrer"),
    ("context.locale", "context.locale"),
    ("context.location.ip_address", "context.ip"),
    ("context.location.timezone", "context.timezone"),
    ("context.device.device_type", "context.device.type"),
    ("context.device.os", "context.os.name"),
    ("context.viewport.width", "context.screen.innerWidth"),
    ("context.viewport.height", "context.screen.innerHeight"),
    ("context.segment", "context"),
)


def _message_path(path: str, message: dict[str, Any], kind: str | None) -> str:
    """A rejection path of the event made from ``message`` (``event_id``, ``user_id``,
    ``event_type.data.name`` ...) as the path of the message field it came from (``messageId``,
    ``userId`` or ``anonymousId``, ``event`` ...), so the client sees what it sent."""
    mtype = kind or message.get("type")

    def swap(old: str, new: str) -> str | None:
        if path == old or path.startswith((old + ".", old + "[")):
            return new + path[len(old) :]
        return None

    if path == "user_id":
        user = message.get("userId")
        has_user = isinstance(user, str | int | float) and not isinstance(user, bool) and user != ""
        return "userId" if has_user or mtype == "alias" else "anonymousId"
    if mtype == "identify":
        found = swap("event_type.data.properties", "traits")
        if found is not None:
            return found
    if mtype == "track":
        found = swap("event_type.data.name", "event")
        if found is not None:
            return found
    for old, new in _MESSAGE_FIELDS:
        found = swap(old, new)
        if found is not None:
            return found
    for old, new in (("event_type.data.properties", "properties"), ("event_type.data", "")):
        found = swap(old, new)
        if found is not None:
            return found.lstrip(".") or "properties"
    return path


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw]
    sentAt: Any = None  # noqa: N815 - Segment's field name
    writeKey: Any = None  # noqa: N815
    context: Any = None
    integrations: Any = None


_BATCH_DECODER = msgspec.json.Decoder(_Batch)
_OBJECT_DECODER = msgspec.json.Decoder(dict[str, Any])


class _KeyedConnection:
    """A view of the request that presents ``key`` as its API key, so the one
    :func:`avila.api.security.authenticate` (scopes, rate limits, metrics) handles write keys."""

    def __init__(self, request: Request[Any, Any, Any], key: str) -> None:
        self._request = request
        self.headers = {"x-api-key": key}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def _basic_key(request: Request[Any, Any, Any]) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed HTTP Basic credentials", code="invalid_api_key") from None
    return user or password or None


async def _authenticate(request: Request[Any, Any, Any], key: str | None) -> Principal:
    if not key:
        raise Unauthorized(
            "missing write key: send an ingest API key as the HTTP Basic user name or as writeKey",
            code="missing_api_key",
        )
    view = cast(ASGIConnection[Any, Any, Any, Any], _KeyedConnection(request, key))
    return await authenticate(view, "ingest")


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The request body, gunzipped if sent gzip-encoded; 400 past ``limit`` bytes (either form)."""
    length = request.headers.get("content-length")
    received = int(length) if length and length.isdigit() else None
    shown = f"{received:,} bytes" if received is not None else f"more than {limit:,} bytes"
    message = f"request body is {shown}; the limit is {limit:,} bytes ({limit // 1024} KB)"
    too_large = BadRequest(
        message,
        code="payload_too_large",
        details=[{"path": "", "limit_bytes": limit, "received_bytes": received}],
    )
    if received is not None and received > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    try:
        return decoded(b"".join(chunks), request.headers.get("content-encoding", ""), limit)
    except PayloadTooLarge:
        raise too_large from None  # Segment's answer to any size: 400 (module docstring)
    except UnsupportedMediaType as exc:  # likewise 400, with our code and message
        raise BadRequest(exc.message, code=exc.code, details=exc.details) from None


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except RecursionError:
        raise BadRequest(
            f"request body cannot be read: {NESTED_TOO_DEEPLY}", details=[{"path": ""}]
        ) from None
    except msgspec.DecodeError as exc:
        _refuse_unreadable(body)
        if isinstance(exc, msgspec.ValidationError):
            raise BadRequest(f"request body is not a Segment payload: {exc}") from None
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None


def _refuse_unreadable(body: bytes) -> None:
    """A body msgspec refused for one value (``1e309``, a lone surrogate): 400 naming it."""
    found = lenient_json.first_unreadable(lenient_json.loads(body))
    if found is not None:
        path, reason = found
        raise BadRequest(
            f"request body has a value that cannot be stored at {path or 'the top level'}: {reason}",
            code="invalid_message",
            details=[{"path": path, "message": reason}],
        )


def _lenient_batch(body: bytes) -> tuple[_Batch, dict[int, Rejection]] | None:
    """A batch body msgspec refused whole, read again leniently: its messages, with those
    holding a value msgspec cannot read already rejected (at their field). None when the
    body is unreadable for another reason, or the unreadable value is outside the messages."""
    value = lenient_json.loads(body)
    if not isinstance(value, dict) or not isinstance(value.get("batch"), list):
        return None
    if lenient_json.first_unreadable({k: v for k, v in value.items() if k != "batch"}):
        return None
    messages: list[msgspec.Raw] = []
    rejected: dict[int, Rejection] = {}
    for index, message in enumerate(value["batch"]):
        found = lenient_json.first_unreadable(message)
        if found is None:
            messages.append(msgspec.Raw(_encode(message)))
            continue
        path, reason = found
        where = f"batch[{index}].{path}" if path else f"batch[{index}]"
        rejected[index] = Rejection(index, "invalid_message", reason, where)
        messages.append(msgspec.Raw(b"null"))
    extras = {k: value.get(k) for k in ("sentAt", "writeKey", "context", "integrations")}
    return _Batch(batch=messages, **extras), rejected


def _now() -> datetime:
    return datetime.now(UTC)


def _ok(extra: dict[str, Any] | None = None) -> Response[bytes]:
    return Response(_encode({"success": True, **(extra or {})}), media_type=MediaType.JSON)


async def _store(
    request: Request[Any, Any, Any],
    ingest: IngestService,
    principal: Principal,
    events: list[bytes],
) -> tuple[int, int, list[Rejection]]:
    result = await ingest.ingest(events, principal.project_id, path_prefix="")
    return result.accepted, result.duplicates, result.rejected


@post(
    ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias"]
    + [f"/v1/{short}" for short in _SHORT],
    request_max_body_size=None,  # enforced by _read_body, with Segment's 400
    status_code=200,
    summary="Segment-compatible single call",
    description=(
        "One Segment message (32 KB at most). Auth: write key (an API key with scope `ingest`) "
        'as the HTTP Basic user name, or `writeKey` in the body. 200 `{"success": true}`.'
    ),
    tags=["segment"],
)
async def segment_call(request: Request[Any, Any, Any], ingest: IngestService) -> Response[bytes]:
    kind = request.url.path.rsplit("/", 1)[-1]
    kind = _SHORT.get(kind, kind)
    header_key = _basic_key(request) or presented_key(request)
    principal = await _authenticate(request, header_key) if header_key else None
    body = await _read_body(request, MAX_MESSAGE_BYTES)
    message = _decode(_OBJECT_DECODER, body)
    if principal is None:
        key = message.get("writeKey")
        principal = await _authenticate(request, key if isinstance(key, str) else None)
    try:
        event = to_event(message, kind, Envelope(received_at=_now()))
    except MessageError as exc:
        raise BadRequest(exc.message, code=exc.code, details=[{"path": exc.path}]) from None
    accepted, duplicates, rejected = await _store(request, ingest, principal, [_encode(event)])
    if rejected:
        r = rejected[0]
        path = _message_path(_relative(r.path), message, kind)
        raise BadRequest(r.message, code=r.code, details=[{"path": path}])
    return _ok({"accepted": accepted, "duplicates": duplicates})


@post(
    ["/v1/batch", "/v1/import", "/v1/b"],
    request_max_body_size=None,
    status_code=200,
    summary="Segment-compatible batch",
    description=(
        'Body `{"batch": [MESSAGE, ...], "sentAt"?, "context"?, "integrations"?}`, 500 KB at '
        "most, 32 KB per message. Valid messages are stored even when others are rejected "
        '(listed in `rejected`). 200 `{"success": true, ...}`.'
    ),
    tags=["segment"],
)
async def segment_batch(request: Request[Any, Any, Any], ingest: IngestService) -> Response[bytes]:
    header_key = _basic_key(request) or presented_key(request)
    principal = await _authenticate(request, header_key) if header_key else None
    body = await _read_body(request, MAX_BATCH_BYTES)
    unreadable: dict[int, Rejection] = {}
    try:
        payload: _Batch = _decode(_BATCH_DECODER, body)
    except (BadRequest, MalformedJSON):
        # One message holding a value msgspec cannot read must not cost the others.
        lenient = _lenient_batch(body)
        if lenient is None:
            raise
        payload, unreadable = lenient
    if principal is None:
        key = payload.writeKey
        principal = await _authenticate(request, key if isinstance(key, str) else None)
    received_at = _now()
    try:
        envelope = Envelope(
            received_at=received_at,
            sent_at=parse_time(payload.sentAt, "sentAt"),
            context=payload.context if isinstance(payload.context, dict) else None,
            integrations=payload.integrations if isinstance(payload.integrations, dict) else None,
        )
    except MessageError as exc:
        raise BadRequest(exc.message, code=exc.code, details=[{"path": exc.path}]) from None

    rejected: list[Rejection] = []
    events: list[bytes] = []
    origins: list[int] = []
    messages: list[dict[str, Any]] = []
    for index, raw in enumerate(payload.batch):
        where = f"batch[{index}]"
        if index in unreadable:
            rejected.append(unreadable[index])
            continue
        if len(raw) > MAX_MESSAGE_BYTES:
            rejected.append(
                Rejection(
                    index,
                    "message_too_large",
                    f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}",
                    where,
                )
            )
            continue
        try:
            message = _OBJECT_DECODER.decode(raw)
            events.append(_encode(to_event(message, None, envelope)))
            origins.append(index)
            messages.append(message)
        except RecursionError:
            rejected.append(Rejection(index, "invalid_message", NESTED_TOO_DEEPLY, where))
        except msgspec.DecodeError as exc:
            rejected.append(_unreadable_message(index, raw, exc))
        except MessageError as exc:
            path = f"{where}.{exc.path}" if exc.path else where
            rejected.append(Rejection(index, exc.code, exc.message, path))
    accepted, duplicates, invalid = await _store(request, ingest, principal, events)
    for r in invalid:
        index = origins[r.index]
        path = _message_path(_relative(r.path), messages[r.index], None)
        rejected.append(
            Rejection(
                index, r.code, r.message, f"batch[{index}].{path}" if path else f"batch[{index}]"
            )
        )
    rejected.sort(key=lambda r: r.index)
    return _ok(
        {
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": [r.to_dict() for r in rejected],
        }
    )


def _unreadable_message(index: int, raw: msgspec.Raw, exc: msgspec.DecodeError) -> Rejection:
    where = f"batch[{index}]"
    found = lenient_json.first_unreadable(lenient_json.loads(bytes(raw)))
    if found is not None:
        path, reason = found
        return Rejection(index, "invalid_message", reason, f"{where}.{path}" if path else where)
    if isinstance(exc, msgspec.ValidationError):  # valid JSON, but not an object
        return Rejection(index, "invalid_message", "expected an object", where)
    return Rejection(index, "invalid_message", f"not valid JSON: {exc}", where)


ROUTES = [segment_call, segment_batch]
