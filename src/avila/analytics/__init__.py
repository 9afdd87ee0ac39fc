"""Behavioural analytics: pure functions ``f(store, project_id, query) -> dict``.

Each returns the response body of its endpoint (shared/API.md field names) and raises
:class:`avila.errors.ValidationFailed` (422, stable ``code``) for invalid queries.
"""

from avila.analytics.funnels import funnel
from avila.analytics.overview import overview, trends
from avila.analytics.profiles import erase_user, user_profile
from avila.analytics.realtime import realtime
from avila.analytics.retention import retention
from avila.analytics.rfm import rfm, user_segment
from avila.analytics.sessions import sessions, user_sessions

__all__ = [
    "erase_user",
    "funnel",
    "overview",
    "realtime",
    "retention",
    "rfm",
    "sessions",
    "trends",
    "user_profile",
    "user_segment",
    "user_sessions",
]
