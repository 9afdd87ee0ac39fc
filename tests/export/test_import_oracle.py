"""Bulk import against an oracle: what lands in the store, what is counted as a duplicate and
which rows are rejected (row number, field path, code) equal a plain-Python model of the API's
rules (json + datetime, written here from docs/ingestion.md's rules, not from our validators) on
the same generated file, in every format.

The file mixes valid events of every type (unicode, extreme values, time zones, missing ids)
with one-defect rows (each defect kind the API rejects), repeated ids within the file, and ids
already stored inside and outside the dedup window.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from avila.export.bulk import bulk_import
from avila.storage.duckdb.store import DuckDBStore
from avila.storage.schema import EVENT_SCHEMA

PROJECT = "oracle"
NOW = datetime.now(UTC).replace(tzinfo=None)
SNAKE = {
    "PageView": "page_view", "Click": "click", "Search": "search", "ProductView": "product_view",
    "AddToCart": "add_to_cart", "RemoveFromCart": "remove_from_cart", "Checkout": "checkout",
    "Purchase": "purchase", "SignUp": "sign_up", "Login": "login", "Logout": "logout",
    "FormSubmit": "form_submit", "VideoPlay": "video_play", "Custom": "custom",
}  # fmt: skip
TEXT = ("Café ☕ 東京", "naïve 👩🏽‍💻", "Ünïcödé \u0301", "plain", 'tab\tquote"back\\slash')

# --- the oracle ------------------------------------------------------------------------------

# field -> (kind, required) per event type; kinds below. Checkout's cart_value is stored as
# revenue; flat columns listed in FLAT.
RULES: dict[str, dict[str, tuple[str, bool]]] = {
    "PageView": {"url": ("text", True), "title": ("text", False), "duration_ms": ("count", False)},
    "Click": {"url": ("text", False), "element_id": ("text", False), "element_text": ("text", False)},
    "Search": {"query": ("text", True), "results_count": ("count", False)},
    "ProductView": {"product_id": ("id", True), "quantity": ("count", False), "price": ("finite", False)},
    "Checkout": {"cart_value": ("finite", False), "currency": ("currency", False)},
    "Purchase": {"order_id": ("id", True), "revenue": ("finite", True), "currency": ("currency", False)},
    "Custom": {"name": ("id", True), "properties": ("object", False)},
}  # fmt: skip
RULES["AddToCart"] = RULES["RemoveFromCart"] = RULES["ProductView"]
FLAT = {
    "PageView": {"url": "url", "title": "title"},
    "Click": {"url": "url"},
    "Search": {"query": "search_query"},
    "ProductView": {"product_id": "product_id", "quantity": "quantity", "price": "price"},
    "Checkout": {"cart_value": "revenue", "currency": "currency"},
    "Purchase": {"order_id": "order_id", "revenue": "revenue", "currency": "currency"},
    "Custom": {"name": "event_name"},
}
FLAT["AddToCart"] = FLAT["RemoveFromCart"] = FLAT["ProductView"]
CONTEXT_RULES = {
    "device": ("device_type", "os", "browser"),
    "location": ("country", "city", "timezone", "ip_address"),
}


class Reject(Exception):
    def __init__(self, path: str, code: str = "invalid_event") -> None:
        self.path, self.code = path, code


def ok_value(kind: str, value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return {
        "text": lambda: isinstance(value, str) and len(value) <= 8192,
        "id": lambda: isinstance(value, str) and 1 <= len(value) <= 256,
        "count": lambda: (
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9
        ),
        "finite": lambda: number and -1e15 <= value <= 1e15,
        "currency": lambda: isinstance(value, str) and len(value) == 3,
        "object": lambda: isinstance(value, dict),
    }[kind]()


def parse_time(text: str) -> datetime:
    stamp = datetime.fromisoformat(text.replace(" ", "T", 1))  # "Z" and offsets: Python 3.11
    return stamp if stamp.tzinfo is None else stamp.astimezone(UTC).replace(tzinfo=None)


def oracle(row: dict[str, Any]) -> dict[str, Any]:
    """The stored row for a flat row, or raise Reject(path, code)."""
    if sum(len(v) for v in row.values() if isinstance(v, str)) > 32 * 1024:
        raise Reject("", "event_too_large")  # checked before anything else
    user_id = row.get("user_id")
    if not ok_value("id", user_id):
        raise Reject("user_id")
    etype = {v: k for k, v in SNAKE.items()}.get(row["event_type"], row["event_type"])
    if etype not in SNAKE:
        raise Reject("event_type.type")
    for name in ("event_id", "session_id"):
        if row.get(name) is not None and not ok_value("id", row[name]):
            raise Reject(name)
    ts = None  # missing: the receive time (checked against received_at)
    if row.get("timestamp") is not None:
        try:
            ts = parse_time(row["timestamp"])
        except ValueError:
            raise Reject("timestamp") from None
    try:
        data = json.loads(row["data"])
    except ValueError:
        raise Reject("event_type.data") from None
    if not isinstance(data, dict):
        raise Reject("event_type.data")
    for name, (kind, required) in RULES.get(etype, {}).items():
        if name not in data or data[name] is None:
            if required:
                raise Reject(f"event_type.data.{name}")
        elif not ok_value(kind, data[name]):
            raise Reject(f"event_type.data.{name}")
    if row.get("context") is not None:
        context = json.loads(row["context"])
        context_text = row["context"]
    else:
        rebuilt = {
            "device": {k: row[k] for k in ("device_type", "os", "browser") if row.get(k)},
            "location": {k: row[k] for k in ("country", "city") if row.get(k)},
        }
        context = {k: v for k, v in rebuilt.items() if v}
        context_text = json.dumps(context, ensure_ascii=False, separators=(",", ":"))
    if not isinstance(context, dict):
        raise Reject("context")
    for part, fields in CONTEXT_RULES.items():
        value = context.get(part)
        if value is not None and not isinstance(value, dict):
            raise Reject(f"context.{part}")
        for name in fields:
            if value and value.get(name) is not None and not ok_value("text", value[name]):
                raise Reject(f"context.{part}.{name}")
    for name in ("referrer", "user_agent"):
        if context.get(name) is not None and not ok_value("text", context[name]):
            raise Reject(f"context.{name}")
    metadata = row.get("metadata")
    if metadata is not None and not isinstance(json.loads(metadata), dict):
        raise Reject("metadata")
    if ts is not None and ts > NOW + timedelta(hours=1):
        raise Reject("timestamp", "timestamp_in_future")
    stored = dict.fromkeys(EVENT_SCHEMA.names)
    stored.update(
        project_id=PROJECT, event_id=row.get("event_id"), user_id=user_id,
        session_id=row.get("session_id"), ts=ts, event_type=SNAKE[etype], data=row["data"],
        metadata=metadata if metadata is not None else "{}", context=context_text,
    )  # fmt: skip
    for name, column in FLAT.get(etype, {}).items():
        value = data.get(name)
        stored[column] = (
            float(value) if column in ("price", "revenue") and value is not None else value
        )
    device, location = context.get("device") or {}, context.get("location") or {}
    for name in ("device_type", "os", "browser"):
        stored[name] = device.get(name)
    for name in ("country", "city"):
        stored[name] = location.get(name)
    stored["referrer"], stored["user_agent"] = context.get("referrer"), context.get("user_agent")
    return stored


# --- the file --------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


GOOD_DATA = {
    "PageView": lambda r: {"url": f"/p/{r.randint(0, 9)}", "title": r.choice(TEXT), "duration_ms": 10**9},
    "Click": lambda r: {"url": "/x", "element_id": r.choice(TEXT)},
    "Search": lambda r: {"query": r.choice(TEXT), "results_count": 0},
    "ProductView": lambda r: {"product_id": "sku-☕", "quantity": 10**9, "price": -1e15},
    "AddToCart": lambda r: {"product_id": "sku-1", "quantity": 2, "price": 9.99},
    "RemoveFromCart": lambda r: {"product_id": "sku-2"},
    "Checkout": lambda r: {"cart_value": 1e15, "currency": "EUR"},
    "Purchase": lambda r: {"order_id": f"o-{r.randint(0, 99)}", "revenue": 12, "currency": "BRL", "items": [{"product_id": "a", "quantity": 3}]},
    "Custom": lambda r: {"name": r.choice(["$identify", "plan", "東京"]), "properties": {"k": [1, {"x": None}]}},
    "SignUp": lambda r: {}, "Login": lambda r: {"anything": True}, "Logout": lambda r: {},
    "FormSubmit": lambda r: {"form": "f"}, "VideoPlay": lambda r: {},
}  # fmt: skip
TIMES = (
    "2025-11-26T10:00:00Z", "2025-11-26T10:00:00.5Z", "2025-11-26 23:59:59.999999",
    "2025-11-26T10:00:00+05:30", "2025-11-26T01:00:00-03:00", "2024-02-29T12:00:00.123Z",
    None,
)  # fmt: skip
# One defect each: (what changes, the path the API names).
DEFECTS: list[tuple[dict[str, Any], str]] = [
    ({"user_id": ""}, "user_id"),
    ({"user_id": None}, "user_id"),
    ({"user_id": "u" * 257}, "user_id"),
    ({"event_id": "e" * 257}, "event_id"),
    ({"session_id": ""}, "session_id"),
    ({"event_type": "Nope"}, "event_type.type"),
    ({"timestamp": "2025-02-30T10:00:00Z"}, "timestamp"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"event_type": "PageView", "data": '{"title":"no url"}'}, "event_type.data.url"),
    ({"event_type": "PageView", "data": '{"url":5}'}, "event_type.data.url"),
    ({"event_type": "Purchase", "data": '{"order_id":"o","revenue":1e16}'}, "event_type.data.revenue"),
    ({"event_type": "AddToCart", "data": '{"product_id":"p","quantity":-1}'}, "event_type.data.quantity"),
    ({"event_type": "AddToCart", "data": '{"product_id":"p","quantity":1000000001}'}, "event_type.data.quantity"),
    ({"event_type": "Checkout", "data": '{"currency":"EURO"}'}, "event_type.data.currency"),
    ({"event_type": "Custom", "data": '{"name":""}'}, "event_type.data.name"),
    ({"data": "[1]"}, "event_type.data"),
    ({"context": '{"device":5}'}, "context.device"),
    ({"context": '{"referrer":7}'}, "context.referrer"),
    ({"context": '{"location":{"city":["x"]}}'}, "context.location.city"),
    ({"metadata": "[1,2]"}, "metadata"),
]  # fmt: skip


def make_rows(seed: int, n: int) -> list[dict[str, Any]]:
    r = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        etype = r.choice(list(GOOD_DATA))
        row: dict[str, Any] = {
            "event_id": f"o-{i}" if i % 17 else None,
            "user_id": f"user-{r.randint(0, 30)}-{r.choice(TEXT)}",
            "session_id": f"s-{i}" if i % 3 or i % 17 == 0 else None,
            "timestamp": r.choice(TIMES),
            "event_type": r.choice([etype, SNAKE[etype]]),
            "data": _dumps(GOOD_DATA[etype](r)),
            "metadata": r.choice([None, '{"tag":"naïve","n":1}', "{}", '{"anonymous_id":"anon-1"}']),
            "context": r.choice(
                [
                    None,
                    _dumps({"device": {"browser": "Firefox", "screen_resolution": [1, 2]}, "location": {"city": "Kraków"}}),
                    _dumps({"referrer": "https://a.example/ü", "viewport": {"width": 3, "height": 4}}),
                    "{}",
                ]
            ),
            "browser": None,
            "city": None,
        }  # fmt: skip
        if row["context"] is None and i % 5 == 0:
            row["browser"], row["city"] = "Safari", "São Paulo"  # rebuilt context
        if i % 11 == 0:
            row.update(r.choice(DEFECTS)[0])
        if i % 13 == 0 and i > 20:
            row["event_id"] = f"o-{r.randint(0, i - 1)}"  # repeats an earlier row's id
        if i % 29 == 0:
            row["event_id"] = r.choice(["stored-recent-1", "stored-recent-2", "stored-old-1"])
        if i % 97 == 0:
            row["timestamp"] = (NOW + timedelta(hours=2)).isoformat() + "Z"
        if i == 7:
            row["data"] = _dumps({"url": "/big", "title": "x" * 33_000})
        rows.append(row)
    return rows


def write(rows: list[dict[str, Any]], fmt: str, path: Path) -> Path:
    columns = list(rows[0])
    table = pa.table({c: pa.array([row.get(c) for row in rows], pa.string()) for c in columns})
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pa_csv.write_csv(table, path)
    else:  # seed-shaped NDJSON: the API's event JSON, JSON parts embedded as they are
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                event = {
                    k: row[k]
                    for k in ("event_id", "user_id", "session_id", "timestamp")
                    if row[k] is not None
                }
                event["event_type"] = {"type": {v: k for k, v in SNAKE.items()}.get(row["event_type"], row["event_type"]), "data": "@DATA@"}  # fmt: skip
                text = _dumps(event).replace('"@DATA@"', row["data"])
                for part in ("metadata", "context"):
                    if row[part] is not None:
                        text = text[:-1] + f',"{part}":{row[part]}}}'
                f.write(text + "\n")
            f.write("{not json\n[1,2]\n")
    return path


def expected(
    rows: list[dict[str, Any]], stored_ids: set[str], fmt: str
) -> tuple[dict[str, Any], list[tuple[int, str, str]], int]:
    """(stored rows by event id or session id, rejections, duplicates)."""
    kept: dict[str, Any] = {}
    rejected: list[tuple[int, str, str]] = []
    seen = set(stored_ids)
    duplicates = 0
    for number, row in enumerate(rows, start=1):
        if fmt == "ndjson" and row["context"] is None and row["browser"]:
            row = {**row, "browser": None, "city": None}  # seed lines carry no flat columns
        try:
            stored = oracle(row)
        except Reject as exc:
            rejected.append((number, exc.code, exc.path))
            continue
        if stored["event_id"] is None:
            kept[f"session:{stored['session_id']}:{number}"] = stored
            continue
        if stored["event_id"] in seen:
            duplicates += 1
            continue
        seen.add(stored["event_id"])
        kept[stored["event_id"]] = stored
    if fmt == "ndjson":
        rejected += [(len(rows) + 1, "malformed_json", ""), (len(rows) + 2, "malformed_json", "")]
    return kept, rejected, duplicates


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
def test_bulk_import_matches_the_oracle(tmp_path: Path, fmt: str) -> None:
    rows = make_rows(seed=len(fmt), n=1500)
    store = DuckDBStore(tmp_path / "db.duckdb")
    try:
        _store_existing(store)
        source = write(rows, fmt, tmp_path / f"rows.{fmt}")
        summary = bulk_import(source, fmt, store, PROJECT, batch_rows=400)
        got = store.query(
            f"SELECT {', '.join(EVENT_SCHEMA.names)} FROM events WHERE project_id = ?"
            " AND received_at > ? ORDER BY rowid",
            [PROJECT, NOW - timedelta(minutes=1)],
        )
        # The daily rollups count the imported rows as they count ingested ones.
        rolled = store.query(
            "SELECT day, sum(events) FROM rollup_daily WHERE project_id = ? AND kind = 'type'"
            " GROUP BY 1 HAVING sum(events) <> 0 ORDER BY 1",
            [PROJECT],
        )
        counted = store.query(
            "SELECT CAST(ts AS DATE), count(*) FROM events WHERE project_id = ? GROUP BY 1"
            " ORDER BY 1",
            [PROJECT],
        )
        # ... and the kept purchases hold the purchases the import stored (RFM reads them).
        purchases = "project_id, user_id, ts, event_id, order_id, revenue"
        kept = store.query(f"SELECT {purchases} FROM kept_purchases ORDER BY ALL")
        bought = store.query(
            f"SELECT {purchases} FROM events WHERE event_type = 'purchase' ORDER BY ALL"
        )
    finally:
        store.close()
    assert rolled == counted
    assert kept == bought and any(row[0] == PROJECT for row in kept)
    want, rejections, duplicates = expected(rows, {"stored-recent-1", "stored-recent-2"}, fmt)

    assert [(r.row, r.code, r.path) for r in summary.rejections] == rejections
    assert summary.duplicates == duplicates
    assert summary.accepted == len(want) == len(got)
    assert summary.rows == len(rows) + (2 if fmt == "ndjson" else 0)
    by_key: dict[str, dict[str, Any]] = {}
    for values in got:
        row = dict(zip(EVENT_SCHEMA.names, values, strict=True))
        key = row["event_id"] if row["event_id"].count("-") != 4 else None
        if key is None or key not in want:  # a generated UUID: match by session
            matches = [k for k in want if k.startswith(f"session:{row['session_id']}:")]
            assert len(matches) == 1, row
            key = matches[0]
            assert want[key]["event_id"] is None
            want[key]["event_id"] = row["event_id"]
        by_key[key] = row
    assert set(by_key) == set(want)
    for key, row in by_key.items():
        expect = want[key]
        for name in EVENT_SCHEMA.names:
            if name == "received_at" or (name == "ts" and expect["ts"] is None):
                assert row[name] == row["received_at"]
                continue
            if name == "context" and expect["context"] != row["context"]:
                assert json.loads(row["context"]) == json.loads(expect["context"]), key
                continue
            assert row[name] == expect[name], (key, name, row[name], expect[name])


def _store_existing(store: DuckDBStore) -> None:
    """Ids stored before the import: two received an hour ago (inside the 24 h window), one
    three days ago (outside it: the API would accept it again)."""
    stamps = [NOW - timedelta(hours=1), NOW - timedelta(hours=1), NOW - timedelta(days=3)]
    ids = ["stored-recent-1", "stored-recent-2", "stored-old-1"]
    columns: dict[str, Any] = {name: [None] * 3 for name in EVENT_SCHEMA.names}
    columns.update(
        project_id=[PROJECT] * 3, event_id=ids, user_id=["old"] * 3, ts=stamps,
        received_at=stamps, event_type=["login"] * 3, data=["{}"] * 3, metadata=["{}"] * 3,
        context=["{}"] * 3,
    )  # fmt: skip
    store.append_events(pa.table(columns, schema=EVENT_SCHEMA))
