"""The Segment message -> event mapping, checked through our real validator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avila.identity import links_from_rows
from avila.ingest.segment import (
    Envelope,
    MessageError,
    corrected_timestamp,
    to_event,
    user_agent_fields,
)
from avila.ingest.validation import validate_events

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ENVELOPE = Envelope(received_at=RECEIVED)
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


def stored(message: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
    """The stored row (columns) of one message, after our validator accepted it."""
    event = to_event(message, kind, ENVELOPE)
    rows, rejected = validate_events([msgspec.json.encode(event)], "p", received_at=RECEIVED)
    assert rejected == [], rejected
    return {name: values[0] for name, values in rows.columns.items() if values}


ORDER = {
    "order_id": 50314,
    "total": 27.5,
    "revenue": 25.0,
    "currency": "USD",
    "products": [{"product_id": "507f", "sku": "45790-32", "price": 19, "quantity": 1}],
}


@pytest.mark.parametrize(
    ("event", "properties", "expected"),
    [
        (
            "Signup Clicked",
            {"plan": "pro"},
            {"event_type": "custom", "event_name": "Signup Clicked"},
        ),
        (
            "Order Completed",
            ORDER,
            {"event_type": "purchase", "order_id": "50314", "revenue": 25.0, "currency": "USD"},
        ),
        (  # no revenue: total is the next best figure (Segment e-commerce spec)
            "Order Completed",
            {"order_id": "o1", "total": 10},
            {"event_type": "purchase", "order_id": "o1", "revenue": 10.0},
        ),
        (  # no order id: our Purchase cannot hold it, so it stays a custom event
            "Order Completed",
            {"revenue": 10},
            {"event_type": "custom", "event_name": "Order Completed"},
        ),
        (
            "Product Viewed",
            {"sku": "G-32", "price": 18.99},
            {"event_type": "product_view", "product_id": "G-32", "price": 18.99},
        ),
        (
            "product_added",
            {"product_id": "p1", "quantity": 2.0, "price": "3.5"},
            {"event_type": "add_to_cart", "product_id": "p1", "quantity": 2, "price": 3.5},
        ),
        (  # an optional field that does not fit is left out (it stays in properties)
            "Product Added",
            {"product_id": "p1", "quantity": 2.5},
            {"event_type": "add_to_cart", "quantity": None},
        ),
        ("Product Removed", {"product_id": "p1"}, {"event_type": "remove_from_cart"}),
        ("Checkout Started", {"value": 42}, {"event_type": "checkout", "revenue": 42.0}),
        ("Products Searched", {"query": "blue shoes"}, {"event_type": "search"}),
        ("Products Searched", {}, {"event_type": "custom"}),
        ("Signed Up", {}, {"event_type": "sign_up"}),
        ("Signed In", {}, {"event_type": "login"}),
        ("Signed Out", {}, {"event_type": "logout"}),
        ("Video Playback Started", {}, {"event_type": "video_play"}),
    ],
)
def test_track_maps_spec_events_when_properties_allow(
    event: str, properties: dict[str, Any], expected: dict[str, Any]
) -> None:
    row = stored({"userId": "u1", "event": event, "properties": properties}, "track")
    assert {k: row[k] for k in expected} == expected
    data = json.loads(row["data"])
    assert data["properties"] == properties  # the original properties stay queryable
    assert data["name"] == event


def test_purchase_items_come_from_products() -> None:
    row = stored({"userId": "u1", "event": "Order Completed", "properties": ORDER}, "track")
    assert json.loads(row["data"])["items"] == [
        {"product_id": "507f", "quantity": 1, "price": 19.0}
    ]


@pytest.mark.parametrize(
    ("message", "url", "title"),
    [
        ({"properties": {"url": "https://a.example/x", "title": "X"}}, "https://a.example/x", "X"),
        (
            {"context": {"page": {"url": "https://a.example/y", "title": "Y"}}},
            "https://a.example/y",
            "Y",
        ),
        ({"name": "Pricing", "properties": {"path": "/pricing"}}, "/pricing", "Pricing"),
    ],
)
def test_page_becomes_page_view(message: dict[str, Any], url: str, title: str) -> None:
    row = stored({"anonymousId": "a1", **message}, "page")
    assert (row["event_type"], row["url"], row["title"]) == ("page_view", url, title)


def test_screen_without_url_uses_its_name() -> None:
    row = stored({"userId": "u1", "type": "screen", "name": "Home"})
    assert (row["event_type"], row["url"]) == ("page_view", "Home")


def test_page_without_any_url_is_refused() -> None:
    with pytest.raises(MessageError) as info:
        to_event({"userId": "u1"}, "page", ENVELOPE)
    assert info.value.code == "missing_url"


def test_identify_group_alias_are_custom_events_with_link_metadata() -> None:
    identify = stored(
        {"userId": "u1", "anonymousId": "a1", "traits": {"email": "x@y.z"}}, "identify"
    )
    assert (identify["event_name"], identify["user_id"]) == ("$identify", "u1")
    assert json.loads(identify["data"])["properties"] == {"email": "x@y.z"}
    assert json.loads(identify["metadata"])["anonymous_id"] == "a1"

    group = stored({"userId": "u1", "groupId": 7, "traits": {"name": "Acme"}}, "group")
    assert group["event_name"] == "$group"
    assert json.loads(group["data"])["properties"] == {"group_id": "7", "traits": {"name": "Acme"}}

    alias = stored({"userId": "u1", "previousId": "old"}, "alias")
    assert (alias["event_name"], alias["user_id"]) == ("$alias", "u1")
    assert json.loads(alias["metadata"])["previous_id"] == "old"


def test_identity_links_from_identify_and_alias_rows() -> None:
    messages = [
        ({"userId": "u1", "anonymousId": "a1"}, "identify"),
        ({"userId": "u1", "previousId": "old"}, "alias"),
        ({"anonymousId": "a2"}, "identify"),  # anonymous only: nothing to link
        ({"userId": "u1", "anonymousId": "a1", "event": "x"}, "track"),  # not a link event
    ]
    raws = [msgspec.json.encode(to_event(m, k, ENVELOPE)) for m, k in messages]
    rows, _ = validate_events(raws, "p", received_at=RECEIVED)
    table = links_from_rows(rows)
    assert table is not None
    assert table.select(["project_id", "anonymous_id", "user_id", "source"]).to_pylist() == [
        {"project_id": "p", "anonymous_id": "a1", "user_id": "u1", "source": "identify"},
        {"project_id": "p", "anonymous_id": "old", "user_id": "u1", "source": "alias"},
    ]


def test_user_id_falls_back_to_anonymous_id_and_one_is_required() -> None:
    assert stored({"anonymousId": "a9", "event": "e"}, "track")["user_id"] == "a9"
    assert stored({"anonymousId": "a9", "userId": "u9", "event": "e"}, "track")["user_id"] == "u9"
    with pytest.raises(MessageError) as info:
        to_event({"event": "e"}, "track", ENVELOPE)
    assert (info.value.code, info.value.path) == ("missing_user", "userId")


def test_message_id_is_the_event_id() -> None:
    assert stored({"userId": "u", "event": "e", "messageId": "m-1"}, "track")["event_id"] == "m-1"


@pytest.mark.parametrize(
    ("timestamp", "sent_at", "expected"),
    [
        # The client clock is 2 h fast: its timestamp and sentAt are both 2 h ahead.
        (
            RECEIVED + timedelta(hours=2) - timedelta(seconds=10),
            RECEIVED + timedelta(hours=2),
            RECEIVED - timedelta(seconds=10),
        ),
        (RECEIVED - timedelta(days=1), None, RECEIVED - timedelta(days=1)),
        (None, RECEIVED, RECEIVED),
    ],
)
def test_clock_skew_correction(
    timestamp: datetime | None, sent_at: datetime | None, expected: datetime
) -> None:
    assert corrected_timestamp(timestamp, sent_at, RECEIVED) == expected


def test_skew_corrected_timestamp_is_stored_and_originals_kept() -> None:
    message = {
        "userId": "u",
        "event": "e",
        "timestamp": "2024-05-01T13:59:50.000+02:00",  # 11:59:50Z, 10 s before sentAt
        "sentAt": "2024-05-01T14:00:00+02:00",
    }
    row = stored(message, "track")
    assert row["ts"] == int(
        (RECEIVED - timedelta(seconds=10) - datetime(1970, 1, 1, tzinfo=UTC))
        / timedelta(microseconds=1)
    )
    metadata = json.loads(row["metadata"])
    assert metadata["original_timestamp"] == "2024-05-01T11:59:50Z"
    assert metadata["sent_at"] == "2024-05-01T12:00:00Z"


def test_batch_level_sent_at_applies_to_each_message() -> None:
    envelope = Envelope(received_at=RECEIVED, sent_at=RECEIVED + timedelta(minutes=5))
    event = to_event(
        {"userId": "u", "event": "e", "timestamp": (RECEIVED + timedelta(minutes=4)).isoformat()},
        "track",
        envelope,
    )
    assert event["timestamp"] == "2024-05-01T11:59:00Z"


def test_context_fields_map_to_ours() -> None:
    context = {
        "userAgent": CHROME_UA,
        "locale": "de-DE",
        "ip": "203.0.113.9",
        "timezone": "Europe/Berlin",
        "page": {"referrer": "https://news.example/", "url": "https://a.example/"},
        "location": {"country": "Germany", "city": "Berlin"},
        "screen": {"width": 1920, "height": 1080},
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "sessionId": 1716550000,
    }
    row = stored({"userId": "u", "event": "e", "context": context}, "track")
    assert row["user_agent"] == CHROME_UA
    assert row["referrer"] == "https://news.example/"
    assert (row["browser"], row["os"], row["device_type"]) == ("Chrome", "Linux", "desktop")
    assert (row["country"], row["city"]) == ("Germany", "Berlin")
    assert row["session_id"] == "1716550000"
    stored_context = json.loads(row["context"])
    assert stored_context["locale"] == "de-DE"
    assert stored_context["location"]["ip_address"] == "203.0.113.9"
    assert stored_context["location"]["timezone"] == "Europe/Berlin"
    assert stored_context["device"]["screen_resolution"] == [1920, 1080]
    assert stored_context["segment"]["library"]["name"] == "analytics.js"


def test_batch_context_is_merged_under_the_message_context() -> None:
    envelope = Envelope(received_at=RECEIVED, context={"locale": "fr-FR", "ip": "198.51.100.1"})
    event = to_event(
        {"userId": "u", "event": "e", "context": {"locale": "en-GB"}}, "track", envelope
    )
    assert event["context"]["locale"] == "en-GB"
    assert event["context"]["location"]["ip_address"] == "198.51.100.1"


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (CHROME_UA, {"browser": "Chrome", "os": "Linux", "device_type": "desktop"}),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            {"browser": "Safari", "os": "iOS", "device_type": "mobile"},
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/125.0.0.0 Safari/537.36 Edg/125.0.0.0",
            {"browser": "Edge", "os": "Windows", "device_type": "desktop"},
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0 Safari/537.36",
            {"browser": "Chrome", "os": "Android", "device_type": "tablet"},
        ),
        ("curl/8.5.0", {}),
    ],
)
def test_user_agent_fields(ua: str, expected: dict[str, str]) -> None:
    assert user_agent_fields(ua) == expected


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"userId": "u"}, "missing_event"),
        ({"userId": "u", "event": "  "}, "missing_event"),
        ({"userId": "u", "event": "e", "properties": [1]}, "invalid_message"),
        ({"userId": "u", "event": "e", "timestamp": "yesterday"}, "invalid_timestamp"),
    ],
)
def test_unusable_track_messages(message: dict[str, Any], code: str) -> None:
    with pytest.raises(MessageError) as info:
        to_event(message, "track", ENVELOPE)
    assert info.value.code == code


def test_batch_item_needs_a_known_type() -> None:
    with pytest.raises(MessageError) as info:
        to_event({"userId": "u", "type": "trak"}, None, ENVELOPE)
    assert info.value.code == "invalid_message_type"


# --- property: whatever a well-formed message carries, the adapter's event passes validation --

_ids = st.one_of(st.text(min_size=1, max_size=60), st.integers(-(10**12), 10**12))
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=30),
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_props = st.dictionaries(
    st.sampled_from(
        [
            "order_id",
            "revenue",
            "total",
            "currency",
            "product_id",
            "sku",
            "price",
            "quantity",
            "query",
            "url",
            "title",
            "path",
            "products",
            "x",
        ]
    ),
    _json,
    max_size=8,
)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@st.composite
def segment_messages(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    kind = draw(st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]))
    message: dict[str, Any] = {"userId": draw(_ids), "anonymousId": draw(_ids)}
    if kind == "track":
        message["event"] = draw(
            st.one_of(
                st.sampled_from(
                    [
                        "Order Completed",
                        "Product Added",
                        "Product Viewed",
                        "Checkout Started",
                        "Products Searched",
                    ]
                ),
                st.text(min_size=1, max_size=40).filter(str.strip),
            )
        )
    message["properties"] = draw(_props)
    if kind in ("page", "screen"):
        message["name"] = draw(st.text(min_size=1, max_size=20))
    message["traits"] = draw(st.dictionaries(st.text(max_size=10), _json, max_size=3))
    message["groupId"] = draw(_ids)
    message["previousId"] = draw(_ids)
    message["context"] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "userAgent": st.text(max_size=80),
                "locale": _json_scalars,
                "ip": _json_scalars,
                "page": st.dictionaries(
                    st.sampled_from(["url", "referrer", "title"]), _json_scalars
                ),
                "screen": st.dictionaries(st.sampled_from(["width", "height"]), _json_scalars),
                "location": st.dictionaries(st.sampled_from(["country", "city"]), _json_scalars),
                "device": st.dictionaries(st.sampled_from(["type", "model"]), _json_scalars),
            },
        )
    )
    timestamp = draw(st.one_of(st.none(), _times))
    if timestamp is not None:
        message["timestamp"] = timestamp.isoformat()
        # sentAt after timestamp, as real clients send it, so the event is never in the future.
        message["sentAt"] = (
            timestamp + draw(st.timedeltas(timedelta(0), timedelta(days=2)))
        ).isoformat()
    return message, kind


@settings(max_examples=150, deadline=None)
@given(segment_messages())
def test_every_mappable_message_passes_our_validator(case: tuple[dict[str, Any], str]) -> None:
    message, kind = case
    try:
        event = to_event(json.loads(json.dumps(message)), kind, ENVELOPE)
    except MessageError:
        return
    rows, rejected = validate_events([msgspec.json.encode(event)], "p", received_at=RECEIVED)
    assert rejected == [], (event, rejected)
    assert rows.columns["user_id"][0] in (str(message["userId"]),)
