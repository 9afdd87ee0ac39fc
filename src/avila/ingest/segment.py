"""Segment HTTP Tracking API messages -> our event JSON (the seed's shape).

One Segment message (``track``, ``identify``, ``page``, ``screen``, ``group``, ``alias``) becomes
one event, which then takes the same validation and idempotency path as any other event
(:mod:`avila.ingest.service`). The mapping (docs/segment.md has the full table):

- ``messageId`` -> ``event_id`` (so a re-sent message is a duplicate, not a second event);
  ``userId``, else ``anonymousId`` -> ``user_id``; ``context.sessionId`` -> ``session_id``.
- ``track`` -> ``Custom{name: event, properties}``, except the Segment e-commerce and B2B spec
  events in :data:`SPEC_EVENTS` (``Order Completed`` -> ``Purchase`` ...) when their properties
  fit our typed payload; otherwise they stay ``Custom``.
- ``page``/``screen`` -> ``PageView`` (url from ``properties.url``, ``context.page.url``, the
  path, or for screens the screen name).
- ``identify`` -> ``Custom "$identify"`` with the traits as properties; ``alias`` ->
  ``Custom "$alias"``; ``group`` -> ``Custom "$group"``. ``metadata.anonymous_id`` /
  ``metadata.previous_id`` make :mod:`avila.identity` record the identity link.
- ``timestamp`` is corrected for the client's clock skew with ``sentAt`` as Segment does:
  ``timestamp = receivedAt - (sentAt - timestamp)``.

Segment reference: the HTTP Tracking API (``/v1/track`` ... ``/v1/batch``, 32 KB per message,
500 KB per batch) and the Spec (common fields, e-commerce and B2B SaaS events).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from avila.schemas.events import DATA_TYPES

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")

#: Segment spec event (normalised: lower case, "_" as space) -> our event type.
SPEC_EVENTS: dict[str, str] = {
    "order completed": "Purchase",
    "product viewed": "ProductView",
    "product added": "AddToCart",
    "product removed": "RemoveFromCart",
    "checkout started": "Checkout",
    "products searched": "Search",
    "signed up": "SignUp",
    "signed in": "Login",
    "signed out": "Logout",
    "video playback started": "VideoPlay",
}


class MessageError(ValueError):
    """A message that cannot become an event; ``path`` is relative to the message."""

    def __init__(self, code: str, message: str, path: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path


@dataclass(frozen=True)
class Envelope:
    """Request-level facts every message of a request shares."""

    received_at: datetime
    sent_at: datetime | None = None
    context: Mapping[str, Any] | None = None
    integrations: Mapping[str, Any] | None = None


def parse_time(value: Any, path: str) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime; naive times are taken as UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageError("invalid_timestamp", "expected an ISO 8601 string", path)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise MessageError("invalid_timestamp", f"not an ISO 8601 time: {value!r}", path) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:45 / 9999-12-31T23:00-05:00: beyond years 1-9999
        raise MessageError("invalid_timestamp", _OUT_OF_RANGE.format(value), path) from None


_OUT_OF_RANGE = "time {!r} is outside the years 1 to 9999 in UTC"


def corrected_timestamp(
    timestamp: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """Event time corrected for client clock skew: ``receivedAt - (sentAt - timestamp)``.

    Without ``sentAt`` the client's timestamp is trusted; without a timestamp the receive time
    is used. All values are aware UTC datetimes.
    """
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp
    return received_at - (sent_at - timestamp)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: Any) -> str | None:
    """Segment ids may be strings or numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return _text(value)


def _obj(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageError("invalid_message", "expected an object", path)
    return value


def _sub(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


_BROWSERS = (
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/")),
    ("Opera", re.compile(r"OPR/|Opera")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/")),
    ("Firefox", re.compile(r"Firefox/|FxiOS/")),
    ("Chrome", re.compile(r"Chrome/|CriOS/|Chromium/")),
    ("Safari", re.compile(r"Safari/")),
)
_OSES = (
    ("iOS", re.compile(r"iPhone|iPad|iPod")),
    ("Android", re.compile(r"Android")),
    ("Windows", re.compile(r"Windows")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("Linux", re.compile(r"Linux|X11")),
)


def user_agent_fields(user_agent: str) -> dict[str, str]:
    """Coarse ``device_type``/``os``/``browser`` from a User-Agent string (same rules as
    avila.js). Deliberately small: exact versions and rare browsers are out of scope."""
    fields: dict[str, str] = {}
    for name, pattern in _BROWSERS:
        if pattern.search(user_agent):
            fields["browser"] = name
            break
    for name, pattern in _OSES:
        if pattern.search(user_agent):
            fields["os"] = name
            break
    if re.search(r"iPad|Tablet", user_agent) or (
        "Android" in user_agent and "Mobile" not in user_agent
    ):
        fields["device_type"] = "tablet"
    elif re.search(r"Mobi|iPhone|iPod", user_agent):
        fields["device_type"] = "mobile"
    elif fields:
        fields["device_type"] = "desktop"
    return fields


def map_context(context: Mapping[str, Any], referrer: str | None = None) -> dict[str, Any]:
    """Segment ``context`` -> our context (device, location, referrer, user_agent, viewport).

    The original context is kept whole under ``segment`` (library, campaign, page, app ...), and
    ``locale`` is copied to the top level. Fields of the wrong JSON type are dropped, not errors.
    """
    out: dict[str, Any] = {}
    user_agent = _text(context.get("userAgent"))
    guessed = user_agent_fields(user_agent) if user_agent else {}
    device_in, os_in, screen = _sub(context, "device"), _sub(context, "os"), _sub(context, "screen")
    device: dict[str, Any] = {
        "device_type": _text(device_in.get("type")) or guessed.get("device_type"),
        "os": _text(os_in.get("name")) or guessed.get("os"),
        "browser": guessed.get("browser"),
    }
    width, height = screen.get("width"), screen.get("height")
    if type(width) is int and type(height) is int and width >= 0 and height >= 0:
        device["screen_resolution"] = [width, height]
    device = {k: v for k, v in device.items() if v is not None}
    if device:
        out["device"] = device
    location_in = _sub(context, "location")
    location = {
        "country": _text(location_in.get("country")),
        "city": _text(location_in.get("city")),
        "timezone": _text(context.get("timezone")),
        "ip_address": _text(context.get("ip")),
    }
    location = {k: v for k, v in location.items() if v is not None}
    if location:
        out["location"] = location
    referrer = referrer or _text(_sub(context, "page").get("referrer"))
    if referrer:
        out["referrer"] = referrer
    if user_agent:
        out["user_agent"] = user_agent
    inner_w, inner_h = screen.get("innerWidth"), screen.get("innerHeight")
    if type(inner_w) is int and type(inner_h) is int and inner_w >= 0 and inner_h >= 0:
        out["viewport"] = {"width": inner_w, "height": inner_h}
    locale = _text(context.get("locale"))
    if locale:
        out["locale"] = locale
    if context:
        out["segment"] = dict(context)
    return out


# --- track: spec events ----------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _count(value: Any) -> int | None:
    number = _number(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def _product_id(props: Mapping[str, Any]) -> str | None:
    return _id(props.get("product_id")) or _id(props.get("sku")) or _id(props.get("id"))


def _first_number(props: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = _number(props.get(key))
        if value is not None:
            return value
    return None


def _spec_payload(etype: str, props: Mapping[str, Any]) -> dict[str, Any]:
    """Our typed fields for a spec event (None where the property is missing or malformed)."""
    if etype == "Purchase":
        items = []
        for product in props.get("products") or []:
            if isinstance(product, dict):
                items.append(
                    {
                        "product_id": _product_id(product),
                        "quantity": _count(product.get("quantity", 1)),
                        "price": _number(product.get("price")),
                    }
                )
        return {
            "order_id": _id(props.get("order_id")) or _id(props.get("checkout_id")),
            "revenue": _first_number(props, "revenue", "total", "value"),
            "currency": _text(props.get("currency")),
            "items": items or None,
        }
    if etype in ("ProductView", "AddToCart", "RemoveFromCart"):
        return {
            "product_id": _product_id(props),
            "quantity": _count(props.get("quantity")),
            "price": _number(props.get("price")),
        }
    if etype == "Checkout":
        return {
            "cart_value": _first_number(props, "revenue", "value", "total"),
            "currency": _text(props.get("currency")),
        }
    if etype == "Search":
        return {"query": _text(props.get("query"))}
    return {}


def track_event_type(name: str, props: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(our type, typed fields)`` for a track call; ``("Custom", {})`` unless the event is a
    spec event whose properties satisfy our payload schema for that type."""
    etype = SPEC_EVENTS.get(name.strip().lower().replace("_", " "))
    if etype is None:
        return "Custom", {}
    payload = {k: v for k, v in _spec_payload(etype, props).items() if v is not None}
    try:
        msgspec.convert(payload, DATA_TYPES[etype])
    except msgspec.ValidationError:
        return "Custom", {}
    return etype, payload


# --- messages -> events ----------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def to_event(message: Mapping[str, Any], kind: str | None, envelope: Envelope) -> dict[str, Any]:
    """Our event (a JSON-ready dict) for one Segment message; raises :class:`MessageError`.

    ``kind`` is the endpoint's message type (``/v1/track`` -> ``"track"``) or None for a batch
    item, whose own ``type`` field then decides.
    """
    mtype = kind or message.get("type")
    if mtype not in MESSAGE_TYPES:
        raise MessageError(
            "invalid_message_type",
            f"type must be one of {', '.join(MESSAGE_TYPES)}, got {mtype!r}",
            "type",
        )
    context = {**(envelope.context or {}), **_obj(message.get("context"), "context")}
    properties = _obj(message.get("properties"), "properties")
    traits = _obj(message.get("traits"), "traits")
    user_id = _id(message.get("userId"))
    anonymous_id = _id(message.get("anonymousId"))
    if not (user_id or anonymous_id):
        raise MessageError("missing_user", "userId or anonymousId is required", "userId")

    # Events are keyed on the stored user_id: the known user if any, else the anonymous id.
    subject = user_id or anonymous_id
    metadata: dict[str, Any] = {"source": "segment", "segment_type": mtype}
    if anonymous_id:
        metadata["anonymous_id"] = anonymous_id
    referrer: str | None = None

    if mtype == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise MessageError("missing_event", "track needs a non-empty event name", "event")
        etype, fields = track_event_type(name, properties)
        data = {**fields, "name": name, "properties": properties}
    elif mtype in ("page", "screen"):
        page = _sub(context, "page")
        name = _text(message.get("name"))
        url = (
            _text(properties.get("url"))
            or _text(page.get("url"))
            or _text(properties.get("path"))
            or _text(page.get("path"))
            or (name if mtype == "screen" else None)
        )
        if url is None:
            raise MessageError(
                "missing_url", "a page needs properties.url or context.page.url", "properties.url"
            )
        etype = "PageView"
        title = _text(properties.get("title")) or _text(page.get("title")) or name
        data = {"url": url, "properties": properties}
        if title:
            data["title"] = title
        if name:
            data["name"] = name
        if _text(message.get("category")):
            data["category"] = message["category"]
        referrer = _text(properties.get("referrer"))
    elif mtype == "identify":
        etype = "Custom"
        data = {"name": "$identify", "properties": traits}
    elif mtype == "group":
        group_id = _id(message.get("groupId"))
        if group_id is None:
            raise MessageError("missing_group", "group needs a groupId", "groupId")
        etype = "Custom"
        data = {"name": "$group", "properties": {"group_id": group_id, "traits": traits}}
    else:  # alias
        previous_id = _id(message.get("previousId"))
        if previous_id is None or user_id is None:
            raise MessageError("missing_user", "alias needs previousId and userId", "previousId")
        etype = "Custom"
        data = {"name": "$alias", "properties": {"previous_id": previous_id}}
        metadata["previous_id"] = previous_id

    client_time = parse_time(message.get("timestamp"), "timestamp") or parse_time(
        message.get("originalTimestamp"), "originalTimestamp"
    )
    sent_at = parse_time(message.get("sentAt"), "sentAt") or envelope.sent_at
    try:
        ts = corrected_timestamp(client_time, sent_at, envelope.received_at)
    except OverflowError:  # a skew of thousands of years
        raise MessageError(
            "invalid_timestamp",
            "timestamp corrected for the clock skew (receivedAt - (sentAt - timestamp)) is"
            " outside the years 1 to 9999",
            "timestamp",
        ) from None
    if client_time is not None:
        metadata["original_timestamp"] = _iso(client_time)
    if sent_at is not None:
        metadata["sent_at"] = _iso(sent_at)
    integrations = message.get("integrations", envelope.integrations)
    if isinstance(integrations, dict) and integrations:
        metadata["integrations"] = integrations

    event: dict[str, Any] = {
        "user_id": subject,
        "event_type": {"type": etype, "data": data},
        "timestamp": _iso(ts),
        "metadata": metadata,
        "context": map_context(context, referrer),
    }
    message_id = _id(message.get("messageId"))
    if message_id:
        event["event_id"] = message_id
    session_id = _id(context.get("sessionId")) or _id(context.get("session_id"))
    if session_id:
        event["session_id"] = session_id
    return event
