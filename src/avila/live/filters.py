"""Filters of an ``events`` subscription: by event type and/or user id.

``{"event_types": ["PageView", ...], "user_ids": ["u1", ...]}``: an event passes when its type
is one of ``event_types`` (if given) and its user one of ``user_ids`` (if given). Equal filters
compare equal, so subscribers with the same filter share one encoded stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from avila.storage.schema import EVENT_TYPES

#: Most entries in one filter list.
MAX_FILTER_VALUES = 100


class FilterError(ValueError):
    """A bad filter; ``details`` in the API's error-detail shape."""

    def __init__(self, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class EventFilter:
    """Stored event types (snake_case) and user ids; empty means "any"."""

    event_types: frozenset[str] = frozenset()
    user_ids: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: Any, path: str = "payload.filter") -> EventFilter | None:
        """The filter of a Subscribe message; None for no filter (``null`` or ``{}``)."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise FilterError(
                "filter must be an object", [{"path": path, "message": "an object is required"}]
            )
        unknown = sorted(set(raw) - {"event_types", "user_ids"})
        if unknown:
            raise FilterError(
                f"unknown filter field(s) {', '.join(unknown)}; filters are event_types, user_ids",
                [{"path": f"{path}.{name}", "message": "unknown field"} for name in unknown],
            )
        values: dict[str, frozenset[str]] = {}
        for name in ("event_types", "user_ids"):
            items = raw.get(name, [])
            if (
                not isinstance(items, list)
                or not all(isinstance(i, str) for i in items)
                or len(items) > MAX_FILTER_VALUES
            ):
                raise FilterError(
                    f"{name} must be a list of at most {MAX_FILTER_VALUES} strings",
                    [{"path": f"{path}.{name}", "message": "a list of strings is required"}],
                )
            values[name] = frozenset(items)
        bad = sorted(t for t in values["event_types"] if t not in EVENT_TYPES)
        if bad:
            raise FilterError(
                f"unknown event type(s) {', '.join(map(repr, bad))}; types are "
                + ", ".join(EVENT_TYPES),
                [{"path": f"{path}.event_types", "message": f"unknown: {t}"} for t in bad],
            )
        if not values["event_types"] and not values["user_ids"]:
            return None
        return cls(frozenset(EVENT_TYPES[t] for t in values["event_types"]), values["user_ids"])

    def positions(self, columns: dict[str, list[Any]]) -> list[int]:
        """Positions of the batch's events that pass."""
        types, users = self.event_types, self.user_ids
        type_col, user_col = columns["event_type"], columns["user_id"]
        if types and users:
            return [
                i
                for i, (t, u) in enumerate(zip(type_col, user_col, strict=True))
                if t in types and u in users
            ]
        if types:
            return [i for i, t in enumerate(type_col) if t in types]
        return [i for i, u in enumerate(user_col) if u in users]

    def to_json(self) -> dict[str, list[str]]:
        pascal = {snake: name for name, snake in EVENT_TYPES.items()}
        return {
            "event_types": sorted(pascal[t] for t in self.event_types),
            "user_ids": sorted(self.user_ids),
        }
