"""Conversion inside a live session: the session's events so far, kept in memory.

The model itself is a calibrated classifier (:class:`avila.ml.churn.ChurnModel`, which is
generic) trained on session prefixes (:func:`avila.ml.features.load_session_prefixes`): after
each of a session's first k events, will a purchase follow in the same session? Here lives
the serving side: :class:`LiveSessions` follows every accepted event (an
``IngestService.listeners`` callable) and keeps, per project and user, the counters of their
current session, so scoring a live session costs one small model call and no store query.

Example:

>>> live = LiveSessions(max_users=2)
>>> live.observe("p", "u1", "s1", 1_000_000, "page_view")
>>> live.observe("p", "u1", "s1", 61_000_000, "add_to_cart")
>>> state = live.get("p", "u1", now_us=120_000_000)
>>> state.features()["carts"], state.features()["duration_s"]
(1.0, 60.0)
>>> live.get("p", "u1", now_us=120_000_000 + 31 * 60_000_000) is None  # idle > 30 min
True
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from avila.ml.features import SESSION_FEATURES

__all__ = ["SESSION_TIMEOUT_US", "LiveSessions", "SessionState"]

#: A session is live while its last event is at most this old (30 minutes, in µs).
SESSION_TIMEOUT_US = 30 * 60 * 1_000_000

_COUNTERS = {
    "page_view": "page_views",
    "product_view": "product_views",
    "add_to_cart": "carts",
    "remove_from_cart": "removes",
    "checkout": "checkouts",
    "search": "searches",
}


@dataclass
class SessionState:
    """Counters of one user's current session; times in µs since the epoch (UTC)."""

    session_id: str | None
    start_us: int
    last_us: int
    events: int = 0
    purchased: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def features(self) -> dict[str, float]:
        """The session's :data:`~avila.ml.features.SESSION_FEATURES` (names as in training)."""
        values = {name: float(self.counts.get(name, 0)) for name in SESSION_FEATURES}
        values["events_so_far"] = float(self.events)
        values["duration_s"] = (self.last_us - self.start_us) / 1e6
        return values


class LiveSessions:
    """Per (project, user) state of the current session, least recently seen evicted first."""

    def __init__(self, max_users: int = 200_000) -> None:
        self.max_users = max_users
        self._states: OrderedDict[tuple[str, str], SessionState] = OrderedDict()
        self._lock = threading.Lock()

    def observe(
        self, project_id: str, user_id: str, session_id: str | None, ts_us: int, event_type: str
    ) -> None:
        """Count one event. A new session id, or 30 minutes of silence, starts a new session."""
        with self._lock:
            self._observe_locked(project_id, user_id, session_id, ts_us, event_type)
            self._evict_locked()

    def _observe_locked(
        self, project_id: str, user_id: str, session_id: str | None, ts_us: int, event_type: str
    ) -> None:
        key = (project_id, user_id)
        state = self._states.get(key)
        if state is not None and ts_us < state.last_us - SESSION_TIMEOUT_US:
            return  # a late event of an older session
        if (
            state is None
            or state.session_id != session_id
            or ts_us - state.last_us > SESSION_TIMEOUT_US
        ):
            state = SessionState(session_id, ts_us, ts_us)
            self._states[key] = state
        self._states.move_to_end(key)
        state.last_us = max(state.last_us, ts_us)
        state.events += 1
        if event_type == "purchase":
            state.purchased = True
        counter = _COUNTERS.get(event_type)
        if counter:
            state.counts[counter] = state.counts.get(counter, 0) + 1

    def _evict_locked(self) -> None:
        while len(self._states) > self.max_users:
            self._states.popitem(last=False)

    def __call__(self, rows: Any) -> None:
        """``IngestService.listeners`` hook: observe every accepted row. One lock and one
        eviction pass per batch, and :meth:`_observe_locked`'s body inlined (it runs on the
        event loop for every accepted event; the call per event was a third of its cost)."""
        cols = rows.columns
        project_id = rows.project_id
        states = self._states
        get = states.get
        move_to_end = states.move_to_end
        counters = _COUNTERS
        timeout = SESSION_TIMEOUT_US
        with self._lock:
            for user, session, ts, kind in zip(
                cols["user_id"], cols["session_id"], cols["ts"], cols["event_type"], strict=False
            ):
                key = (project_id, user)
                state = get(key)
                if state is not None:
                    last = state.last_us
                    if ts < last - timeout:
                        continue  # a late event of an older session
                    if state.session_id != session or ts - last > timeout:
                        state = states[key] = SessionState(session, ts, ts)
                    elif ts > last:
                        state.last_us = ts
                    move_to_end(key)
                else:
                    state = states[key] = SessionState(session, ts, ts)
                state.events += 1
                if kind == "purchase":
                    state.purchased = True
                counter = counters.get(kind)
                if counter:
                    counts = state.counts
                    counts[counter] = counts.get(counter, 0) + 1
            self._evict_locked()

    def get(self, project_id: str, user_id: str, *, now_us: int) -> SessionState | None:
        """The user's session if its last event is at most 30 minutes before ``now_us``."""
        with self._lock:
            state = self._states.get((project_id, user_id))
            if state is None or now_us - state.last_us > SESSION_TIMEOUT_US:
                return None
            return state

    def forget(self, project_id: str, user_id: str) -> None:
        with self._lock:
            self._states.pop((project_id, user_id), None)
