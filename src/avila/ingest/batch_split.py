"""The events of a batch body that msgspec refused whole, each as its own raw JSON.

Why: ``{"events": [...]}`` is decoded in one call, and one event the decoder cannot read (a
lone UTF-16 surrogate escape such as ``"\\ud800"``, nesting past the recursion limit) fails the
call, which would refuse every valid event sent beside it. On that failure path only, this
module finds where each element of the ``events`` array starts and ends without decoding it,
so each is validated on its own and only the unreadable ones are rejected (at ``events[i]``).

The scan is iterative (no recursion, whatever the depth) and string-aware: a string token is
matched whole by one regular expression, so brackets and commas inside text never count. It
answers None, and the caller keeps the decoder's own error, unless the body is exactly one
object whose only key is ``events`` holding an array, with balanced brackets throughout.
"""

from __future__ import annotations

import json
import re

#: a whole JSON string (escapes skipped pairwise) or one structural character
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)
_OPEN = frozenset(b"[{")
_CLOSE = {ord("]"): ord("["), ord("}"): ord("{")}
_WHITESPACE = b" \t\r\n"


def split_events(body: bytes) -> list[bytes] | None:
    """The raw JSON of each element of ``body``'s ``events`` array, or None (see the module)."""
    text = body.strip(_WHITESPACE)
    if not text.startswith(b"{") or not text.endswith(b"}"):
        return None
    stack: list[int] = []
    state = "key"  # in the outer object: "key", "colon", "value", "after"
    elements: list[bytes] = []
    element_start: int | None = None
    array_open = False
    array_closed = False
    gap_start = 0
    for match in _TOKEN.finditer(text):
        gap = text[gap_start : match.start()]
        depth = len(stack)
        if b'"' in gap or (depth < 2 and gap.strip(_WHITESPACE)):
            return None  # an unterminated string, or a stray value in the outer object
        gap_start = match.end()
        token = match.group()
        first = token[0]
        if first == ord('"'):
            if depth == 1:
                if state != "key" or array_closed or _key(token) != "events":
                    return None
                state = "colon"
            elif depth == 2 and element_start is None:
                element_start = match.start()
            continue
        if first in _OPEN:
            if depth == 1:
                if state != "value" or first != ord("["):
                    return None
                array_open, state = True, "after"
            elif depth == 2 and element_start is None:
                element_start = match.start()
            stack.append(first)
        elif first in _CLOSE:
            if not stack or stack.pop() != _CLOSE[first]:
                return None
            if depth == 2:  # the events array ends
                if not _close_element(text, element_start, match.start(), elements, last=True):
                    return None
                element_start, array_closed = None, True
        elif first == ord(":"):
            if depth == 1:
                if state != "colon":
                    return None
                state = "value"
        elif first == ord(","):
            if depth == 1:
                return None  # a second key: not the documented body
            if depth == 2:
                if not _close_element(text, element_start, match.start(), elements, last=False):
                    return None
                element_start = None
    if stack or not array_open or not array_closed or b'"' in text[gap_start:]:
        return None
    return elements


def _key(token: bytes) -> str | None:
    try:
        key = json.loads(token)
    except ValueError:
        return None
    return key if isinstance(key, str) else None


def _close_element(
    text: bytes, start: int | None, end: int, elements: list[bytes], *, last: bool
) -> bool:
    """Add the element ending before ``end``; False if there is none where one must be (a
    leading or doubled comma). An empty array ends with no element."""
    if start is None:
        # Scalars (numbers, true, null) are not tokens: take what lies since the separator.
        separator = max(text.rfind(b",", 0, end), text.rfind(b"[", 0, end))
        raw = text[separator + 1 : end].strip(_WHITESPACE)
        if not raw:
            return last and not elements and text[separator : separator + 1] == b"["
        elements.append(raw)
        return True
    elements.append(text[start:end].strip(_WHITESPACE))
    return True
