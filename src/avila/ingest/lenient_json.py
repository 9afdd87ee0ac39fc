"""What msgspec refused in a JSON body, found with the standard library's more lenient decoder.

msgspec refuses a number out of float range (``1e309``) and a lone UTF-16 surrogate escape
(``"\\ud800"``) for the whole document, with no field path (``$[...]``) or none at all. The
``json`` module reads both (as ``inf`` and as a lone surrogate in a ``str``), so on that failure
path a body can be read again and the offending value named by its path: the request is refused
with the field to fix, and in a batch only the message holding it is rejected.
"""

from __future__ import annotations

import json
import math
from typing import Any


def loads(body: bytes) -> Any:
    """``body`` decoded by the ``json`` module, or None when even it cannot read it."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def first_unreadable(value: Any, path: str = "") -> tuple[str, str] | None:
    """``(path, reason)`` of the first value msgspec cannot read, depth first; None if none.
    Paths look like ``properties.items[2].price``; iterative, whatever the nesting."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where, "number out of range (not a finite double)"
        if isinstance(item, str):
            if _lone_surrogate(item):
                return where, "text holds a lone UTF-16 surrogate"
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                if _lone_surrogate(key):
                    return child_path, "a key holds a lone UTF-16 surrogate"
                children.append((child_path, child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
