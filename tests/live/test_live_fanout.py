"""The WebSocket fan-out without a server: shared frames, bounded outboxes, sampling, filters,
each checked against a plain-Python oracle."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from scipy import stats

from avila.ingest.validation import validate_events
from avila.live import LiveBus
from avila.live.fanout import Fanout, LiveLimits, Outbox, TooManyConnections
from avila.live.feed import EventView
from avila.live.filters import EventFilter, FilterError
from avila.live.frames import events_frame, message_frame
from avila.live.sampling import TokenBucket, uniform_positions


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


DATA = {
    "PageView": {"url": "/p"},
    "Click": {"element_id": "buy"},
    "Purchase": {"order_id": "o1", "revenue": 12.5},
    "Search": {"query": "café"},
}


def _view(project: str, n: int, rng: random.Random, prefix: str = "e") -> EventView:
    raws = [
        json.dumps(
            {
                "event_id": f"{prefix}-{i}",
                "user_id": rng.choice(["ana", "bo", "zoë", "李"]),
                "timestamp": "2026-11-30T10:00:00Z",
                "event_type": {"type": (kind := rng.choice(list(DATA))), "data": DATA[kind]},
            }
        ).encode()
        for i in range(n)
    ]
    rows, rejected = validate_events(raws, project)  # type: ignore[arg-type]
    assert not rejected
    return EventView(rows)


def _decode(outbox: Outbox) -> list[dict[str, Any]]:
    messages = []
    while (taken := outbox.take_nowait()) is not None:
        messages.append(json.loads(taken[1]))
    return messages


def test_one_frame_object_is_shared_by_every_subscriber_of_a_stream() -> None:
    fanout = Fanout(LiveLimits(), clock=Clock())
    boxes = [fanout.connect("p", f"k{i}") for i in range(3)]
    for box in boxes:
        fanout.set_channels(box, ["events"])
    fanout.publish_many("p", "events", _view("p", 5, random.Random(1)))
    assert fanout.flush() == 1  # one encoding for three subscribers
    taken = [box.take_nowait() for box in boxes]
    assert all(t is not None for t in taken)
    frames = {id(t[0]) for t in taken if t}
    texts = {id(t[1]) for t in taken if t}
    assert len(frames) == 1 and len(texts) == 1
    message = json.loads(taken[0][1])  # type: ignore[index]
    assert message["type"] == "Events"
    assert message["payload"]["sampled"] == 1.0 and message["payload"]["dropped"] == 0
    assert [e["event_id"] for e in message["payload"]["events"]] == [f"e-{i}" for i in range(5)]


def test_a_single_event_goes_out_as_the_event_message() -> None:
    frame = events_frame([{"event_id": "x"}], 1.0)
    assert json.loads(frame.text(0)) == {
        "type": "Event",
        "payload": {"event_id": "x"},
        "dropped": 0,
    }
    assert json.loads(events_frame([{"event_id": "x"}], 0.5).text(3))["payload"]["dropped"] == 3


def test_a_lagging_outbox_drops_oldest_events_frames_and_reports_them_once() -> None:
    box = Outbox("p", "k", maxsize=3)
    batches = [[{"n": i}] * size for i, size in enumerate([4, 1, 2, 5, 3])]
    frames = [events_frame(b, 1.0) for b in batches]
    alert = message_frame("alerts", {"kind": "x"})
    box.put(frames[0])
    box.put(alert)
    dropped = sum(box.put(f) for f in frames[1:])
    # Oracle: the queue keeps the alert and the newest two events frames.
    assert dropped == 4 + 1 + 2
    messages = _decode(box)
    assert [m["type"] for m in messages] == ["Alert", "Events", "Events"]
    assert messages[0]["dropped"] == 7  # single messages carry the running total
    assert messages[1]["payload"]["dropped"] == 7  # first events frame: what was missed
    assert messages[2]["payload"]["dropped"] == 0  # ... reported once
    assert box.lost_events == 7 and box.lost_messages == 0


def test_alerts_are_dropped_only_when_no_events_frame_is_left() -> None:
    box = Outbox("p", "k", maxsize=2)
    for i in range(5):
        box.put(message_frame("alerts", {"i": i}))
    messages = _decode(box)
    assert [m["payload"]["i"] for m in messages] == [3, 4]
    assert messages[0]["dropped"] == 3 and box.lost_messages == 3


def test_token_bucket_matches_an_oracle() -> None:
    rng = random.Random(5)
    rate = 50.0
    bucket = TokenBucket(rate, 0.0)
    tokens, last, now = rate, 0.0, 0.0
    for _ in range(2000):
        now += rng.choice([0.0, 0.05, 0.2, 0.2, 1.5])
        offered = rng.choice([0, 1, 3, 10, 40, 200])
        tokens = min(rate, tokens + (now - last) * rate)
        last = now
        expected = 0 if offered == 0 else offered if offered <= tokens else max(1, int(tokens))
        tokens -= expected
        assert bucket.take(offered, now) == expected


def test_uniform_positions_include_every_position_equally_often() -> None:
    rng = random.Random(11)
    n, k, rounds = 40, 7, 6000
    counts = [0] * n
    for _ in range(rounds):
        picked = uniform_positions(n, k, rng.sample)
        assert picked == sorted(set(picked)) and len(picked) == k
        for p in picked:
            counts[p] += 1
    # Each position is kept with probability k/n: a chi-square test against that.
    expected = [rounds * k / n] * n
    assert stats.chisquare(counts, expected).pvalue > 0.001
    assert uniform_positions(5, 9) == [0, 1, 2, 3, 4]


def test_filters_match_a_plain_python_oracle() -> None:
    rng = random.Random(3)
    view = _view("p", 300, rng)
    events = [view[i] for i in range(len(view))]
    for raw in (
        {"event_types": ["Purchase"]},
        {"user_ids": ["zoë", "李"]},
        {"event_types": ["Click", "PageView"], "user_ids": ["ana"]},
    ):
        parsed = EventFilter.parse(raw)
        assert parsed is not None
        expected = [
            i
            for i, e in enumerate(events)
            if (not raw.get("event_types") or e["event_type"]["type"] in raw["event_types"])
            and (not raw.get("user_ids") or e["user_id"] in raw["user_ids"])
        ]
        assert parsed.positions(view.columns) == expected
    assert EventFilter.parse({}) is None and EventFilter.parse(None) is None
    assert EventFilter.parse({"event_types": ["Click"]}) == EventFilter.parse(
        {"event_types": ["Click"], "user_ids": []}
    )
    with pytest.raises(FilterError):
        EventFilter.parse({"event_types": ["Nope"]})
    with pytest.raises(FilterError):
        EventFilter.parse({"user_ids": [str(i) for i in range(101)]})


def test_fanout_samples_each_stream_and_keeps_projects_apart() -> None:
    clock = Clock()
    fanout = Fanout(LiveLimits(max_events_per_second=100), clock=clock, rng=random.Random(2))
    whole = fanout.connect("a", "k1")
    buys = fanout.connect("a", "k1")
    other = fanout.connect("b", "k2")
    fanout.set_channels(whole, ["events"])
    fanout.set_channels(buys, ["events"], EventFilter.parse({"event_types": ["Purchase"]}))
    fanout.set_channels(other, ["events", "metrics"])
    rng = random.Random(4)
    views = [_view("a", 400, rng, f"a{b}") for b in range(3)]
    for view in views:
        fanout.publish_many("a", "events", view)
    assert fanout.publish("b", "metrics", {"events_last_second": 3}) == 1
    assert fanout.flush() == 2
    [frame] = _decode(whole)
    assert frame["payload"]["sampled"] == pytest.approx(100 / 1200)
    ids = [e["event_id"] for e in frame["payload"]["events"]]
    assert len(ids) == 100 and len(set(ids)) == 100
    order = [f"a{b}-{i}" for b in range(3) for i in range(400)]
    assert ids == sorted(ids, key=order.index)  # a sample, in arrival order
    purchases = [
        v[i] for v in views for i in range(len(v)) if v[i]["event_type"]["type"] == "Purchase"
    ]
    [buy_frame] = _decode(buys)
    kept = buy_frame["payload"]["events"]
    assert round(len(kept) / buy_frame["payload"]["sampled"]) == len(purchases)
    assert {e["event_type"]["type"] for e in kept} == {"Purchase"}
    assert [m["type"] for m in _decode(other)] == ["Metrics"]  # nothing of project a
    assert fanout.stats["a"].sampled_out_events == 1200 - 100 + len(purchases) - len(kept)


def test_caps_and_disconnect_free_places() -> None:
    fanout = Fanout(LiveLimits(max_connections_per_project=3, max_connections_per_key=2))
    a = fanout.connect("p", "k1")
    fanout.connect("p", "k1")
    with pytest.raises(TooManyConnections) as refused:
        fanout.connect("p", "k1")
    assert refused.value.scope == "key"
    fanout.connect("p", "k2")
    with pytest.raises(TooManyConnections) as refused:
        fanout.connect("p", "k3")
    assert refused.value.scope == "project"
    fanout.disconnect(a)
    fanout.disconnect(a)  # idempotent
    fanout.connect("p", "k3")
    assert fanout.stats["p"].connections == 3
    assert fanout.stats["p"].closed["too_many_connections"] == 2


def test_the_bus_forwards_to_the_fanout_and_keeps_in_process_subscriptions() -> None:
    bus = LiveBus()
    fanout = Fanout(clock=Clock())
    bus.attach(fanout)
    sub = bus.subscribe("p", ["alerts"])
    box = fanout.connect("p", "k")
    fanout.set_channels(box, ["alerts", "events"])
    assert bus.publish("p", "alerts", {"kind": "anomaly"}) == 2
    assert sub.get_nowait() == ("alerts", {"kind": "anomaly"})
    assert bus.has_subscribers("p", "events") and bus.projects("events") == {"p"}
    assert bus.publish("q", "alerts", {"kind": "elsewhere"}) == 0
    assert [m["type"] for m in _decode(box)] == ["Alert"]


def test_frames_are_ascii_and_decode_to_the_same_text() -> None:
    payload = {"title": "Olá 🌍 São Paulo ☕ 李", "path": "a\\ã", "raw": "\u2028\x7f"}
    frame = events_frame([payload, payload], 1.0)
    assert frame.shared.isascii() and frame.nbytes == len(frame.shared)
    assert json.loads(frame.text(2))["payload"]["events"] == [payload, payload]
    assert json.loads(message_frame("alerts", payload).text(0))["payload"] == payload
