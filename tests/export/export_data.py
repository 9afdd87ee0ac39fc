"""Events with unicode, nulls and millisecond timestamps, and readers for every export format
that return comparable rows."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

BASE = datetime(2025, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)


def make_events(prefix: str, n: int = 40) -> list[dict[str, Any]]:
    """``n`` events of several types for users ``{prefix}-u0..3``; timestamps with ms."""
    events: list[dict[str, Any]] = []
    for i in range(n):
        ts = BASE + timedelta(seconds=37 * i, milliseconds=7 * i)
        kind = i % 5
        if kind == 0:
            etype = {"type": "PageView", "data": {"url": f"/p/{i}", "title": "Café ☕ 東京"}}
        elif kind == 1:
            etype = {"type": "PageView", "data": {"url": "/home", "title": None}}
        elif kind == 2:
            etype = {
                "type": "AddToCart",
                "data": {"product_id": f"sku-{i}", "quantity": i, "price": 9.99},
            }
        elif kind == 3:
            etype = {
                "type": "Purchase",
                "data": {"order_id": f"o-{i}", "revenue": 123.45 + i, "currency": "BRL"},
            }
        else:
            etype = {
                "type": "Custom",
                "data": {
                    "name": "plan_chosen",
                    "properties": {"plan": "pró", "seats": i, "x": None},
                },
            }
        event: dict[str, Any] = {
            "event_id": f"{prefix}-e{i}",
            "user_id": f"{prefix}-u{i % 4}",
            "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event_type": etype,
            "metadata": {"n": i, "tag": "naïve"} if i % 3 else {},
        }
        if i % 2:
            event["session_id"] = f"{prefix}-s{i % 3}"
        if i % 4 != 3:
            event["context"] = {
                "device": {"device_type": "Mobile", "os": "iOS", "browser": "Safari"},
                "location": {"country": "BR", "city": "São Paulo"},
                "referrer": None,
                "user_agent": "Mozilla/5.0 «test»",
            }
        events.append(event)
    return events


def unique_prefix() -> str:
    return "x" + uuid.uuid4().hex[:10]


def expected_rows(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What an export row must hold for each event (by event_id)."""
    types = {
        "PageView": "page_view",
        "AddToCart": "add_to_cart",
        "Purchase": "purchase",
        "Custom": "custom",
    }
    rows = {}
    for e in events:
        data = e["event_type"]["data"]
        ctx = e.get("context") or {}
        rows[e["event_id"]] = {
            "user_id": e["user_id"],
            "session_id": e.get("session_id"),
            "timestamp": pd.Timestamp(e["timestamp"]),
            "event_type": types[e["event_type"]["type"]],
            "url": data.get("url"),
            "title": data.get("title"),
            "revenue": data.get("revenue"),
            "quantity": data.get("quantity"),
            "city": (ctx.get("location") or {}).get("city"),
            "event_name": data.get("name"),
            "data": data,
            "metadata": e.get("metadata") or {},
            "context": ctx,
        }
    return rows


def _none(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def normalise(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows keyed by event_id with comparable Python values."""
    out = {}
    for r in records:
        quantity = _none(r["quantity"])
        revenue = _none(r["revenue"])
        out[r["event_id"]] = {
            "user_id": r["user_id"],
            "session_id": _none(r["session_id"]),
            "timestamp": pd.Timestamp(r["timestamp"]).tz_convert("UTC")
            if pd.Timestamp(r["timestamp"]).tzinfo
            else pd.Timestamp(r["timestamp"]).tz_localize("UTC"),
            "event_type": r["event_type"],
            "url": _none(r["url"]),
            "title": _none(r["title"]),
            "revenue": None if revenue is None else float(revenue),
            "quantity": None if quantity is None else int(quantity),
            "city": _none(r["city"]),
            "event_name": _none(r["event_name"]),
            "data": _json(r["data"]),
            "metadata": _json(r["metadata"]),
            "context": _json(r["context"]),
        }
    return out


def read_csv_pandas(content: bytes) -> list[dict[str, Any]]:
    frame = pd.read_csv(io.BytesIO(content), dtype={"quantity": "Int64"}, keep_default_na=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.to_dict("records")


def read_csv_arrow(content: bytes) -> list[dict[str, Any]]:
    table = pa_csv.read_csv(
        io.BytesIO(content),
        convert_options=pa_csv.ConvertOptions(
            strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )
    return table.to_pylist()


def read_json(content: bytes) -> list[dict[str, Any]]:
    return json.loads(content)


def read_ndjson(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in content.decode().splitlines()]


def read_ndjson_pandas(content: bytes) -> list[dict[str, Any]]:
    frame = pd.read_json(io.BytesIO(content), lines=True, dtype={"quantity": "Int64"})
    return frame.to_dict("records")


def read_parquet_pandas(content: bytes) -> list[dict[str, Any]]:
    return pd.read_parquet(io.BytesIO(content)).to_dict("records")


def read_parquet_arrow(content: bytes) -> list[dict[str, Any]]:
    table = pq.read_table(io.BytesIO(content))
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("quantity").type == pa.int64()
    assert table.schema.field("revenue").type == pa.float64()
    return table.to_pylist()


def read_parquet_duckdb(content: bytes, tmp_path: Any) -> list[dict[str, Any]]:
    path = tmp_path / f"{uuid.uuid4().hex}.parquet"
    path.write_bytes(content)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
    kinds = {row[0]: row[1] for row in described}
    assert kinds["timestamp"] == "TIMESTAMP WITH TIME ZONE"
    table = con.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table()
    con.close()
    return table.to_pylist()
