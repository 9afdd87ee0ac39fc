"""The stored event row: one Arrow schema shared by ingestion, every backend and exports.

Analytics filter on the flattened columns; everything else of the event is kept as JSON text in
``data`` (the event type's payload), ``metadata`` and ``context``. Timestamps are UTC, naive,
microsecond precision: ``ts`` is the client's event time, ``received_at`` the server's.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import pyarrow as pa

EVENT_COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("project_id", pa.string(), "Project that owns the event (from the API key)."),
    ("event_id", pa.string(), "Client event id; the idempotency key within a project."),
    ("user_id", pa.string(), "User id as sent by the client."),
    ("session_id", pa.string(), "Client session id, if sent."),
    ("ts", pa.timestamp("us"), "Client event time, UTC."),
    ("received_at", pa.timestamp("us"), "Server receive time, UTC."),
    ("event_type", pa.string(), "snake_case event type: page_view, add_to_cart, purchase ..."),
    ("url", pa.string(), "PageView/Click url."),
    ("title", pa.string(), "PageView title."),
    ("product_id", pa.string(), "Product of ProductView/AddToCart/RemoveFromCart."),
    ("order_id", pa.string(), "Purchase order id."),
    ("event_name", pa.string(), "Custom event name."),
    ("search_query", pa.string(), "Search query."),
    ("revenue", pa.float64(), "Purchase revenue."),
    ("currency", pa.string(), "Purchase currency."),
    ("quantity", pa.int64(), "Product quantity."),
    ("price", pa.float64(), "Product unit price."),
    ("device_type", pa.string(), "context.device.device_type"),
    ("os", pa.string(), "context.device.os"),
    ("browser", pa.string(), "context.device.browser"),
    ("country", pa.string(), "context.location.country"),
    ("city", pa.string(), "context.location.city"),
    ("referrer", pa.string(), "context.referrer"),
    ("user_agent", pa.string(), "context.user_agent"),
    ("data", pa.string(), "event_type.data as JSON text."),
    ("metadata", pa.string(), "metadata as JSON text."),
    ("context", pa.string(), "context as JSON text."),
)

EVENT_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in EVENT_COLUMNS])
EVENT_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _, _ in EVENT_COLUMNS)

# snake_case stored type for each PascalCase type of the seed's event model.
EVENT_TYPES: dict[str, str] = {
    "PageView": "page_view",
    "Click": "click",
    "Search": "search",
    "ProductView": "product_view",
    "AddToCart": "add_to_cart",
    "RemoveFromCart": "remove_from_cart",
    "Checkout": "checkout",
    "Purchase": "purchase",
    "SignUp": "sign_up",
    "Login": "login",
    "Logout": "logout",
    "FormSubmit": "form_submit",
    "VideoPlay": "video_play",
    "Custom": "custom",
}


TIMESTAMP_COLUMNS = frozenset({"ts", "received_at"})

#: Columns of one batch of events: column name -> list of values, timestamps as integer
#: microseconds since the Unix epoch (UTC). Cheap to build in Python and to serialise.
ColumnBatch = dict[str, list[Any]]


def column_array(
    values: list[Any], field: pa.Field, memory_pool: pa.MemoryPool | None = None
) -> pa.Array:
    """One column of :data:`EVENT_SCHEMA` from its values (timestamps as epoch microseconds)."""
    if field.name in TIMESTAMP_COLUMNS:
        ints = pa.array(values, type=pa.int64(), memory_pool=memory_pool)
        return ints.cast(field.type, memory_pool=memory_pool)
    return pa.array(values, type=field.type, memory_pool=memory_pool)


def columns_to_arrow(
    batches: list[ColumnBatch], memory_pool: pa.MemoryPool | None = None
) -> pa.Table:
    """One Arrow table (:data:`EVENT_SCHEMA`) from several column batches (its buffers from
    ``memory_pool``, default Arrow's)."""
    arrays = []
    for field in EVENT_SCHEMA:
        name = field.name
        if len(batches) == 1:
            values = batches[0][name]
        else:
            values = list(chain.from_iterable(batch[name] for batch in batches))
        arrays.append(column_array(values, field, memory_pool))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)
