"""WebSocket text frames of the live stream, encoded once and shared by every subscriber.

A :class:`Frame` is the JSON text of one server message with a hole for the ``dropped`` count,
the only per-connection part: ``frame.text(0)`` is the shared string every subscriber that lost
nothing gets (the same object, no copy); a subscriber that lost events gets its own copy with
the number filled in. The key order is fixed (``type`` first) so clients may dispatch on a
prefix.

Messages::

    {"type":"Event","payload":{...one event...},"dropped":N}
    {"type":"Events","payload":{"sampled":R,"events":[...],"dropped":D}}
    {"type":"Metrics","payload":{...},"dropped":N}
    {"type":"Alert","payload":{...},"dropped":N}

The text is pure ASCII (non-ASCII characters are written as JSON ``\\uXXXX`` escapes, once per
frame): the ASGI server encodes the text to UTF-8 for every connection, and encoding an ASCII
string is a plain copy, about 20 times cheaper than encoding one with accents or emoji.

``N`` (top level, as before batching existed) counts everything this connection has lost so far;
``D`` counts the events lost since the previous ``Event``/``Events`` frame of this connection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON requires
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"


def ascii_json(value: Any) -> str:
    """``value`` as JSON text with every non-ASCII character escaped (valid JSON: non-ASCII
    characters only occur inside strings)."""
    text = _encode(value).decode()
    return text if text.isascii() else _NON_ASCII.sub(_escape, text)


#: Message type of each channel's single message.
MESSAGE_TYPES = {"events": "Event", "metrics": "Metrics", "alerts": "Alert"}


class Frame:
    """``head + str(dropped) + tail``; ``events`` is how many events it carries (0 when the
    frame is not on the ``events`` channel), ``cumulative`` whether ``dropped`` is the
    connection's running total (single messages) or the loss since the previous events frame
    (``Events``)."""

    __slots__ = ("cumulative", "events", "head", "nbytes", "shared", "tail")

    def __init__(self, head: str, tail: str, events: int, cumulative: bool) -> None:
        self.head = head
        self.tail = tail
        self.events = events
        self.cumulative = cumulative
        self.shared = head + "0" + tail
        #: Size of ``shared`` on the wire (before WebSocket framing): frames are ASCII JSON.
        self.nbytes = len(self.shared)

    def text(self, dropped: int) -> str:
        return self.shared if dropped == 0 else f"{self.head}{dropped}{self.tail}"

    def __len__(self) -> int:
        return len(self.shared)


def message_frame(channel: str, payload: Any) -> Frame:
    """A single ``Event``/``Metrics``/``Alert`` message."""
    kind = MESSAGE_TYPES[channel]
    body = ascii_json(payload)
    head = f'{{"type":"{kind}","payload":{body},"dropped":'
    return Frame(head, "}", 1 if channel == "events" else 0, cumulative=True)


def events_frame(events: Sequence[Any], sampled: float) -> Frame:
    """Events of one flush: a single ``Event`` message when there is exactly one and nothing
    was sampled away (the trickle case, the message clients had before batching), else one
    ``Events`` batch."""
    if len(events) == 1 and sampled == 1.0:
        return message_frame("events", events[0])
    body = ascii_json(events)
    head = f'{{"type":"Events","payload":{{"sampled":{_encode(sampled).decode()},"events":{body},"dropped":'
    return Frame(head, "}}", len(events), cumulative=False)
