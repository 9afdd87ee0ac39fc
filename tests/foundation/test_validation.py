"""Event validation at the edge: paths of bad fields, flattening, and robustness to garbage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avila.ingest.validation import MAX_EVENT_BYTES, validate_events

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def event(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "event_id": "e1",
        "user_id": "u1",
        "timestamp": "2026-01-15T11:00:00Z",
        "event_type": {"type": "PageView", "data": {"url": "/", "title": "Home"}},
    }
    body.update(overrides)
    return json.dumps(body, ensure_ascii=False).encode()


def one(raw: bytes) -> tuple[dict[str, object] | None, list[dict[str, object]]]:
    rows, rejected = validate_events([raw], "p", received_at=NOW)
    table = rows.to_arrow().to_pylist()
    return (table[0] if table else None), [r.to_dict() for r in rejected]


@pytest.mark.parametrize(
    ("raw", "path", "code"),
    [
        (event(user_id=5), "events[0].user_id", "invalid_event"),
        (event(user_id=""), "events[0].user_id", "invalid_event"),
        (event(event_type={"type": "Nope"}), "events[0].event_type.type", "invalid_event"),
        (
            event(event_type={"type": "Purchase", "data": {"order_id": "o", "revenue": "12"}}),
            "events[0].event_type.data.revenue",
            "invalid_event",
        ),
        (
            event(event_type={"type": "Purchase", "data": {"revenue": 12}}),
            "events[0].event_type.data.order_id",
            "invalid_event",
        ),
        (
            event(event_type={"type": "PageView", "data": {}}),
            "events[0].event_type.data.url",
            "invalid_event",
        ),
        (event(context={"device": {"os": 3}}), "events[0].context.device.os", "invalid_event"),
        (
            event(context={"viewport": {"width": -1, "height": 2}}),
            "events[0].context.viewport.width",
            "invalid_event",
        ),
        (event(metadata=[1, 2]), "events[0].metadata", "invalid_event"),
        (event(timestamp="yesterday"), "events[0].timestamp", "invalid_event"),
        (event(timestamp="2026-01-15T13:00:01Z"), "events[0].timestamp", "timestamp_in_future"),
        (b"[1, 2]", "events[0]", "invalid_event"),
        (b'{"user_id": ', "events[0]", "invalid_event"),
    ],
)
def test_rejections_name_the_field(raw: bytes, path: str, code: str) -> None:
    row, rejected = one(raw)
    assert row is None
    assert rejected[0]["path"] == path and rejected[0]["code"] == code and rejected[0]["index"] == 0


def test_exactly_one_hour_ahead_is_accepted() -> None:
    row, rejected = one(event(timestamp="2026-01-15T13:00:00Z"))
    assert rejected == [] and row is not None


def test_oversize_event_is_rejected_alone() -> None:
    big = event(metadata={"blob": "x" * MAX_EVENT_BYTES})
    rows, rejected = validate_events([big, event(event_id="ok")], "p", received_at=NOW)
    assert [r.code for r in rejected] == ["event_too_large"]
    assert rows.event_ids == ["ok"] and rows.indexes == [1]


def test_flattening_and_raw_json_are_kept() -> None:
    raw = event(
        event_type={
            "type": "Purchase",
            "data": {"order_id": "o-1", "revenue": 1e12, "currency": "BRL", "extra": "kept ✓"},
        },
        context={
            "device": {"device_type": "Mobile", "os": "iOS", "browser": "Safari"},
            "location": {"country": "BR", "city": "São Paulo"},
            "referrer": "https://x.example/",
            "campaign": {"utm_source": "newsletter"},
        },
        session_id="s1",
        timestamp="2026-01-15T08:30:00.123-03:00",
    )
    row, rejected = one(raw)
    assert rejected == [] and row is not None
    assert row["event_type"] == "purchase" and row["order_id"] == "o-1" and row["revenue"] == 1e12
    assert (
        row["city"] == "São Paulo"
        and row["device_type"] == "Mobile"
        and row["referrer"] == "https://x.example/"
    )
    assert row["ts"] == datetime(2026, 1, 15, 11, 30, 0, 123000)  # converted to UTC
    assert row["received_at"] == NOW.replace(tzinfo=None)
    assert json.loads(row["data"])["extra"] == "kept ✓"
    assert json.loads(row["context"])["campaign"] == {"utm_source": "newsletter"}


def test_missing_id_and_timestamp_are_filled() -> None:
    raw = json.dumps({"user_id": "u", "event_type": {"type": "Login"}}).encode()
    row, rejected = one(raw)
    assert rejected == [] and row is not None
    assert len(str(row["event_id"])) == 36 and row["ts"] == NOW.replace(tzinfo=None)
    assert row["metadata"] == "{}" and row["context"] == "{}" and row["data"] == "{}"


def test_every_seed_event_type_is_accepted() -> None:
    data = {
        "PageView": {"url": "/"},
        "Click": {},
        "Search": {"query": "q"},
        "ProductView": {"product_id": "p"},
        "AddToCart": {"product_id": "p", "quantity": 2, "price": 9.5},
        "RemoveFromCart": {"product_id": "p"},
        "Checkout": {"cart_value": 10},
        "Purchase": {
            "order_id": "o",
            "revenue": 10,
            "items": [{"product_id": "p", "quantity": 1, "price": 10}],
        },
        "SignUp": {},
        "Login": {},
        "Logout": {},
        "FormSubmit": {"form_id": "f"},
        "VideoPlay": {"video_id": "v"},
        "Custom": {"name": "n", "properties": {"a": [1, {"b": None}]}},
    }
    raws = [event(event_id=k, event_type={"type": k, "data": v}) for k, v in data.items()]
    rows, rejected = validate_events(raws, "p", received_at=NOW)
    assert rejected == [] and len(rows) == len(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_never_raises_only_rejects(value: object) -> None:
    raw = msgspec.json.encode(value)
    rows, rejected = validate_events([raw], "p", received_at=NOW)
    assert len(rows) + len(rejected) == 1


@settings(max_examples=200, deadline=None)
@given(
    user=st.text(min_size=1, max_size=50),
    url=st.text(max_size=100),
    revenue=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
    offset_minutes=st.integers(min_value=-10_000, max_value=60),
)
def test_valid_events_round_trip(user: str, url: str, revenue: float, offset_minutes: int) -> None:
    ts = (NOW + timedelta(minutes=offset_minutes)).isoformat()
    raws = [
        event(user_id=user, timestamp=ts, event_type={"type": "PageView", "data": {"url": url}}),
        event(
            event_id="e2",
            user_id=user,
            timestamp=ts,
            event_type={"type": "Purchase", "data": {"order_id": "o", "revenue": revenue}},
        ),
    ]
    rows, rejected = validate_events(raws, "p", received_at=NOW)
    assert rejected == []
    out = rows.to_arrow().to_pylist()
    assert [r["user_id"] for r in out] == [user, user]
    assert out[0]["url"] == url and out[1]["revenue"] == revenue
    assert out[0]["ts"] == (NOW + timedelta(minutes=offset_minutes)).replace(tzinfo=None)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (event().replace(b'"Home"', b'"Ho\xffme"'), "events[0].event_type.data"),
        (event()[:-1] + b', "metadata": {"k\xc3": 1}}', "events[0].metadata"),
        (event()[:-1] + b', "metadata": {"k": "\xed\xa0\x80"}}', "events[0].metadata"),
        (event()[:-1] + b', "context": {"unknown": "\xff"}}', "events[0].context"),
    ],
)
def test_invalid_utf8_in_kept_or_skipped_json_is_rejected_with_its_path(
    raw: bytes, path: str
) -> None:
    # msgspec checks UTF-8 only where it decodes; raw JSON kept as text must be checked too.
    row, rejected = one(raw)
    assert row is None
    assert rejected == [
        {
            "index": 0,
            "code": "invalid_event",
            "message": "Invalid UTF-8 encoded string",
            "path": path,
        }
    ]


def test_repeated_contexts_validate_and_flatten_like_the_first() -> None:
    # The same context bytes in many events of a batch (one client's device/location) are
    # decoded once and reused; every event must still get its own, identical result, and a bad
    # context must be rejected every time it comes (only valid contexts are reused).
    ctx = {
        "device": {"device_type": "Phone", "os": "iOS", "browser": "Safari"},
        "location": {"country": "PT", "city": "Évora"},
        "referrer": "https://example.org/",
        "user_agent": "UA/1.0 ✓",
        "extra": {"kept": [1, 2]},
    }
    bad = {"device": {"os": 3}}
    bad_utf8 = event(event_id="u8")[:-1] + b', "context": {"unknown": "\xff"}}'
    raws = []
    for i in range(6):
        raws.append(event(event_id=f"g{i}", context=ctx))
        raws.append(event(event_id=f"b{i}", context=bad))
        raws.append(bad_utf8)
    rows, rejected = validate_events(raws, "p", received_at=NOW)
    table = rows.to_arrow().to_pylist()
    assert [r["event_id"] for r in table] == [f"g{i}" for i in range(6)]
    for r in table:
        assert (r["device_type"], r["os"], r["browser"]) == ("Phone", "iOS", "Safari")
        assert (r["country"], r["city"]) == ("PT", "Évora")
        assert (r["referrer"], r["user_agent"]) == ("https://example.org/", "UA/1.0 ✓")
        assert json.loads(r["context"]) == ctx
    assert [(r.index, r.path) for r in rejected] == [
        (i, f"events[{i}].context.device.os" if i % 3 == 1 else f"events[{i}].context")
        for i in range(18)
        if i % 3
    ]
