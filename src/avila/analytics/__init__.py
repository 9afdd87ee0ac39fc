"""Behavioural analytics: pure functions ``f(store, project_id, query) -> dict``.

Each returns the response body of its endpoint (shared/API.md field names) and raises
:class:`avila.errors.ValidationFailed` (422, stable ``code``) for invalid queries.
"""

from avila.analytics.funnels import funnel, funnel_dropped
from avila.analytics.lifecycle import lifecycle
from avila.analytics.overview import overview, trends
from avila.analytics.paths import paths
from avila.analytics.profiles import erase_user, user_profile
from avila.analytics.realtime import realtime
from avila.analytics.retention import retention
from avila.analytics.rfm import rfm, user_segment
from avila.analytics.sessions import sessions, user_sessions
from avila.analytics.stickiness import stickiness

__all__ = [
    "erase_user",
    "funnel",
    "funnel_dropped",
    "lifecycle",
    "overview",
    "paths",
    "realtime",
    "retention",
    "rfm",
    "sessions",
    "stickiness",
    "trends",
    "user_profile",
    "user_segment",
    "user_sessions",
]
