"""User endpoints: profile, RFM segment, sessions, and GDPR erasure.

``GET /api/v1/users/{user_id}/predictions`` lives in :mod:`avila.api.ml`. Unknown users are a
404 ``user_not_found``; DELETE needs the ``admin`` scope. Semantics: docs/users.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated, Any

from litestar import delete, get
from litestar.params import Parameter

from avila.analytics import erase_user, user_profile, user_segment, user_sessions
from avila.analytics.common import fragments, parse_query
from avila.analytics.profiles import require_user
from avila.api import ml as ml_api
from avila.api.analytics import MaxSessionSeconds, Result, TimeoutSeconds, run, session_query
from avila.api.component import AppContext
from avila.errors import AvilaError
from avila.schemas.analytics import RFMQuery
from avila.security.keys import Principal
from avila.storage.base import Store

_TAGS = ["users"]


@get(
    "/api/v1/users/{user_id:str}",
    opt={"scope": "read"},
    summary="User profile",
    description=(
        "First/last seen, totals, sessions, revenue, events by type, top pages, devices,"
        " locations and the most recent events of one user (all of their stored events)."
    ),
    tags=_TAGS,
)
async def get_user(
    user_id: str,
    principal: Principal,
    store: Store,
    recent: Annotated[int, Parameter(ge=0, le=200)] = 20,
) -> Result:
    return await run(_profile, store, principal.project_id, user_id, recent)


def _profile(store: Store, project_id: str, user_id: str, recent: int) -> Result:
    return user_profile(store, project_id, user_id, recent=recent)


@get(
    "/api/v1/users/{user_id:str}/segment",
    opt={"scope": "read"},
    summary="User RFM segment",
    description=(
        "The user's recency, frequency, monetary value, R/F/M scores (1-5, scored against all"
        " purchasing users of the project) and segment; null scores when the user made no"
        " purchase in the window."
    ),
    tags=_TAGS,
)
async def get_user_segment(
    user_id: str,
    principal: Principal,
    store: Store,
    reference_date: datetime | None = None,
    window_days: Annotated[int, Parameter(ge=1, le=3650)] = 365,
) -> Result:
    q = parse_query(RFMQuery, {"reference_date": reference_date, "window_days": window_days})
    return await run(user_segment, store, principal.project_id, user_id, q)


@get(
    "/api/v1/users/{user_id:str}/sessions",
    opt={"scope": "read"},
    summary="User sessions",
    description=(
        "Session metrics of one user and their `limit` most recent sessions in the range"
        " (default: the last 30 days)."
    ),
    tags=_TAGS,
)
async def get_user_sessions(
    user_id: str,
    principal: Principal,
    store: Store,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    filters: str | None = None,
    timezone: str = "UTC",
    timeout_seconds: TimeoutSeconds = 1800,
    max_session_seconds: MaxSessionSeconds = 86400,
    limit: Annotated[int, Parameter(ge=0, le=1000)] = 50,
) -> Result:
    q = session_query(
        start_time, end_time, filters, timezone, timeout_seconds, max_session_seconds, limit
    )
    return await run(_user_sessions, store, principal.project_id, user_id, q)


def _user_sessions(store: Store, project_id: str, user_id: str, q: Any) -> Result:
    require_user(store, project_id, user_id)
    return user_sessions(store, project_id, user_id, q)


@delete(
    "/api/v1/users/{user_id:str}",
    opt={"scope": "admin"},
    status_code=200,
    summary="Erase a user (GDPR)",
    description=(
        "Deletes every stored event of the user in the key's project, their identity links and"
        " their precomputed predictions."
    ),
    tags=_TAGS,
)
async def delete_user(user_id: str, principal: Principal, store: Store, ctx: AppContext) -> Result:
    result, erased = await asyncio.to_thread(_erase, store, principal.project_id, user_id)
    # Scores computed at training time, and the live session state kept per id as sent,
    # would otherwise keep serving the erased person and their anonymous ids.
    with contextlib.suppress(AvilaError):
        service = ml_api.get_service(ctx)
        for erased_id in erased:
            service.forget(principal.project_id, erased_id)
    return result


def _erase(store: Store, project_id: str, user_id: str) -> tuple[Result, list[str]]:
    """Erase the person; also returns the ids erased with them (read before their links go)."""
    ids = [user_id]
    aliases_sql = fragments(store).get("person_aliases", "")
    if aliases_sql:
        ids += [row[0] for row in store.query(aliases_sql, [project_id, user_id])]
    return erase_user(store, project_id, user_id), list(dict.fromkeys(ids))


ROUTES = [get_user, get_user_segment, get_user_sessions, delete_user]
