"""The seed's event JSON as msgspec Structs.

The envelope keeps ``event_type.data``, ``metadata`` and ``context`` as raw JSON so they are
stored byte-for-byte (unknown fields and unicode included); the typed views below are decoded
from those raw bytes only to validate them and to pull out the flattened columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Raw, Struct

EventTypeName = Literal[
    "PageView",
    "Click",
    "Search",
    "ProductView",
    "AddToCart",
    "RemoveFromCart",
    "Checkout",
    "Purchase",
    "SignUp",
    "Login",
    "Logout",
    "FormSubmit",
    "VideoPlay",
    "Custom",
]

Id = Annotated[str, Meta(min_length=1, max_length=256)]
ShortText = Annotated[str, Meta(max_length=8192)]
Finite = Annotated[float, Meta(ge=-1e15, le=1e15)]
Count = Annotated[int, Meta(ge=0, le=10**9)]


class EventTypeEnvelope(Struct):
    type: EventTypeName
    data: Raw = Raw(b"{}")


class EventEnvelope(Struct):
    """One event as a client sends it (the seed's shape)."""

    user_id: Id
    event_type: EventTypeEnvelope
    event_id: Id | None = None
    session_id: Id | None = None
    timestamp: datetime | None = None
    # Raw cannot sit in a union with None in msgspec: absent and null are both b"null" here.
    metadata: Raw = Raw(b"null")
    context: Raw = Raw(b"null")


class SingleEventBody(Struct):
    event: Raw


class BatchBody(Struct):
    # An empty batch is a client bug (nothing to store), refused like any schema violation.
    events: Annotated[list[Raw], Meta(min_length=1)]


# --- typed views of event_type.data, one per type --------------------------------------------


class AnyData(Struct):
    """Types whose data has no field we flatten (SignUp, Login, Logout, FormSubmit, ...)."""


class PageViewData(Struct):
    url: ShortText
    title: ShortText | None = None
    duration_ms: Count | None = None


class ClickData(Struct):
    url: ShortText | None = None
    element_id: ShortText | None = None
    element_text: ShortText | None = None


class SearchData(Struct):
    query: ShortText
    results_count: Count | None = None


class ProductData(Struct):
    product_id: Id
    quantity: Count | None = None
    price: Finite | None = None


class PurchaseItem(Struct):
    product_id: Id
    quantity: Count = 1
    price: Finite | None = None


class PurchaseData(Struct):
    order_id: Id
    revenue: Finite
    currency: Annotated[str, Meta(min_length=3, max_length=3)] | None = None
    items: list[PurchaseItem] | None = None


class CheckoutData(Struct):
    cart_value: Finite | None = None
    currency: Annotated[str, Meta(min_length=3, max_length=3)] | None = None


class CustomData(Struct):
    name: Annotated[str, Meta(min_length=1, max_length=256)]
    properties: dict[str, Any] | None = None


DATA_TYPES: dict[str, type[Struct]] = {
    "PageView": PageViewData,
    "Click": ClickData,
    "Search": SearchData,
    "ProductView": ProductData,
    "AddToCart": ProductData,
    "RemoveFromCart": ProductData,
    "Checkout": CheckoutData,
    "Purchase": PurchaseData,
    "SignUp": AnyData,
    "Login": AnyData,
    "Logout": AnyData,
    "FormSubmit": AnyData,
    "VideoPlay": AnyData,
    "Custom": CustomData,
}


# --- typed view of context --------------------------------------------------------------------


class Device(Struct):
    device_type: ShortText | None = None
    os: ShortText | None = None
    browser: ShortText | None = None
    screen_resolution: list[int] | None = None


class Location(Struct):
    country: ShortText | None = None
    city: ShortText | None = None
    timezone: ShortText | None = None
    ip_address: ShortText | None = None


class Viewport(Struct):
    width: Count
    height: Count


class Context(Struct):
    device: Device | None = None
    location: Location | None = None
    referrer: ShortText | None = None
    user_agent: ShortText | None = None
    viewport: Viewport | None = None


ENVELOPE_DECODER = msgspec.json.Decoder(EventEnvelope)
CONTEXT_DECODER = msgspec.json.Decoder(Context)
DATA_DECODERS = {name: msgspec.json.Decoder(cls) for name, cls in DATA_TYPES.items()}
SINGLE_DECODER = msgspec.json.Decoder(SingleEventBody)
BATCH_DECODER = msgspec.json.Decoder(BatchBody)
