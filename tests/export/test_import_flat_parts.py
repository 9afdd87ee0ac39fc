"""Flat rows without JSON parts (``url``, ``product_id``, ``browser`` ... columns, no ``data`` or
``context``) take the import's column-wise path with the parts built from their flat columns.
The oracle is the per-event path the API itself runs on such a row: the seed event rebuilt by
``row_to_event`` and judged by ``validate_events``. Both must store the same rows, byte for
byte, and reject the same rows with the same code, message and path."""

from __future__ import annotations

import math
import random
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from avila.export.checked import ACCEPTED_SCHEMA, field_path
from avila.export.columnar import ColumnarValidator
from avila.export.flat_events import row_to_event
from avila.export.reader import flat_rows
from avila.ingest.validation import validate_events

PROJECT = "flat"
RECEIVED = datetime(2026, 12, 4, 12, 0, 0)
TYPES = [
    "PageView", "page_view", "Click", "Search", "ProductView", "AddToCart", "RemoveFromCart",
    "Purchase", "Checkout", "Custom", "Login", "SignUp", "FormSubmit",
]  # fmt: skip
TEXT = ["Café ☕", "東京", "plain", 'q"uote\\', "", None]


def _rows(seed: int, n: int) -> dict[str, list[Any]]:
    rng = random.Random(seed)

    def maybe(values: list[Any], none: float = 0.2) -> Any:
        return None if rng.random() < none else rng.choice(values)

    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "event_id", "user_id", "event_type", "timestamp", "url", "title", "search_query",
            "product_id", "quantity", "price", "order_id", "revenue", "currency", "event_name",
            "properties", "device_type", "os", "browser", "country", "city", "referrer",
            "user_agent", "data", "context",
        )
    }  # fmt: skip
    for i in range(n):
        row = {
            "event_id": f"flat-{seed}-{i}",
            "user_id": rng.choice(["u1", "ü2", "user-3"]),
            "event_type": rng.choice(TYPES),
            "timestamp": rng.choice(["2025-11-26T10:00:00Z", "2025-11-26T10:00:00.123456+02:00"]),
            "url": maybe(["/p", "/produto/ã", "https://x.example/a?b=c"]),
            "title": maybe(TEXT),
            "search_query": maybe(TEXT),
            "product_id": maybe(["sku-1", "sku-☕"]),
            "quantity": maybe([1, 2, 0, -1, 10**12]),
            "price": maybe([9.5, 0.0, 1e308, -2.25, math.nan, math.inf]),
            "order_id": maybe(["o-1", "o-2"]),
            "revenue": maybe([99.9, 0.0, 12.0]),
            "currency": maybe(["BRL", "EUR", "usd", "XXXX"]),
            "event_name": maybe(["signup_bonus", "über"]),
            "properties": maybe(['{"a": 1}', '{"b": [1, 2]}', "{not json", "  ", "[1]"]),
            "device_type": maybe(["Desktop", "Mobile"]),
            "os": maybe(["Linux", "iOS"]),
            "browser": maybe(["Firefox", "Safari"]),
            "country": maybe(["BR", "PT", "日本"]),
            "city": maybe(["São Paulo", "Porto"]),
            "referrer": maybe(["https://google.com", ""]),
            "user_agent": maybe(["Mozilla/5.0", "curl/8"]),
            # a few rows carry their JSON parts: those are used as they are
            "data": '{"url":"/given"}' if rng.random() < 0.05 else None,
            "context": '{"device":{"browser":"Edge"}}' if rng.random() < 0.05 else None,
        }
        for name, value in row.items():
            columns[name].append(value)
    return columns


def _batch(columns: dict[str, list[Any]]) -> pa.RecordBatch:
    types = {"quantity": pa.int64(), "price": pa.float64(), "revenue": pa.float64()}
    return pa.RecordBatch.from_pydict(
        {name: pa.array(values, types.get(name, pa.string())) for name, values in columns.items()}
    )


def _per_event(batch: pa.RecordBatch) -> tuple[pa.Table, list[tuple[int, str, str, str]]]:
    """The oracle: every row through the API's own per-event validation."""
    events = [row_to_event(row) for row in flat_rows(batch)]
    accepted, rejections = validate_events(events, PROJECT, received_at=RECEIVED)
    table = accepted.to_arrow()
    rows = np.asarray(accepted.indexes, dtype=np.int64) + 1
    table = table.append_column("row", pa.array(rows, pa.int64())).cast(ACCEPTED_SCHEMA)
    rejected = [(r.index + 1, r.code, r.message, field_path(r.path)) for r in rejections]
    return table, sorted(rejected)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_flat_rows_store_what_the_per_event_path_stores(seed: int) -> None:
    batch = _batch(_rows(seed, 600))
    expected, expected_rejections = _per_event(batch)

    checked = ColumnarValidator(PROJECT, RECEIVED).flat(batch, 1)

    got = checked.accepted
    assert got.num_rows == expected.num_rows
    for name in ACCEPTED_SCHEMA.names:
        assert got.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert sorted((r.row, r.code, r.message, r.path) for r in checked.rejected) == (
        expected_rejections
    )
    assert expected.num_rows > batch.num_rows // 3  # the oracle accepted many rows


def test_valid_flat_rows_take_the_column_wise_path() -> None:
    n = 1000
    batch = pa.RecordBatch.from_pydict(
        {
            "event_id": [f"ok-{i}" for i in range(n)],
            "user_id": [f"u{i % 7}" for i in range(n)],
            "event_type": ["PageView", "add_to_cart", "Purchase", "Login"] * (n // 4),
            "timestamp": ["2025-11-26T10:00:00Z"] * n,
            "url": ["/p"] * n,
            "product_id": ["sku-1"] * n,
            "quantity": pa.array([2] * n, pa.int64()),
            "price": pa.array([9.5] * n, pa.float64()),
            "order_id": ["o-1"] * n,
            "revenue": pa.array([10.0] * n, pa.float64()),
            "browser": ["Firefox", None] * (n // 2),
            "city": ["Porto"] * n,
        }
    )
    expected, rejections = _per_event(batch)
    checked = ColumnarValidator(PROJECT, RECEIVED).flat(batch, 1)
    assert rejections == [] and checked.rejected == []
    assert checked.accepted.to_pylist() == expected.to_pylist()
    assert checked.slow_rows == 0  # none went per event


def test_a_flat_row_without_any_part_column_is_judged_as_the_api_would() -> None:
    """No ``data``/``context`` columns at all, and no flat context: PageView rows without a
    ``url`` are rejected at ``event_type.data.url``, the rest stored with an empty context."""
    batch = pa.RecordBatch.from_pydict(
        {
            "event_id": ["a", "b", "c"],
            "user_id": ["u", "u", "u"],
            "event_type": ["PageView", "PageView", "Login"],
            "timestamp": ["2025-11-26T10:00:00Z"] * 3,
            "url": ["/x", None, None],
        }
    )
    expected, expected_rejections = _per_event(batch)
    checked = ColumnarValidator(PROJECT, RECEIVED).flat(batch, 1)
    assert checked.accepted.to_pylist() == expected.to_pylist()
    assert [(r.row, r.code, r.path) for r in checked.rejected] == [
        (row, code, path) for row, code, _, path in expected_rejections
    ]
    assert [r[3] for r in expected_rejections] == ["event_type.data.url"]


def test_rows_without_any_flat_part_column_are_judged_as_the_api_would() -> None:
    """Only ids, type and time: a Login is stored with empty parts, a PageView (it needs a
    ``url``) rejected, as the per-event path does."""
    batch = pa.RecordBatch.from_pydict(
        {
            "event_id": ["l1", "p1"],
            "user_id": ["u", "u"],
            "event_type": ["Login", "PageView"],
            "timestamp": ["2025-11-26T10:00:00Z"] * 2,
        }
    )
    expected, expected_rejections = _per_event(batch)
    checked = ColumnarValidator(PROJECT, RECEIVED).flat(batch, 1)
    assert checked.accepted.to_pylist() == expected.to_pylist()
    assert [(r.row, r.code, r.message, r.path) for r in checked.rejected] == expected_rejections
    assert [r[0] for r in expected_rejections] == [2]
