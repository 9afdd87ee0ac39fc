"""Authentication, scopes and rate limits for every route but /health and /metrics.

Routes declare the scope they need with ``opt={"scope": "read"}``; one guard resolves the key,
checks the scope, counts the request against the key's rate limit and leaves the caller's
:class:`~avila.security.keys.Principal` in ``connection.state.principal``.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Message, Scope

from avila.errors import Forbidden, RateLimited, Unauthorized
from avila.security.keys import KeyRegistry, Principal
from avila.security.ratelimit import RateLimiter

RATE_HEADERS_STATE = "avila_rate_headers"
#: WebSocket subprotocol carrying the API key: ``avila.key.<KEY>``.
WS_KEY_PREFIX = "avila.key."


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    headers = connection.headers
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if str(connection.scope["type"]) == "websocket":
        # Browsers cannot set headers on a WebSocket: the key may come as the subprotocol
        # "avila.key.<KEY>" (docs/realtime.md) or as ?api_key=.
        scope: dict[str, Any] = dict(connection.scope)
        offers: list[str] = list(scope.get("subprotocols") or ())
        for offered in offers:
            if offered.startswith(WS_KEY_PREFIX) and len(offered) > len(WS_KEY_PREFIX):
                return offered[len(WS_KEY_PREFIX) :]
        return connection.query_params.get("api_key")
    return None


def authenticate(connection: ASGIConnection[Any, Any, Any, Any], scope_needed: str) -> Principal:
    """Resolve and authorise the caller; raises 401/403/429 errors."""
    state = connection.app.state
    keys: KeyRegistry = state.key_store
    limiter: RateLimiter = state.rate_limiter
    key = presented_key(connection)
    if not key:
        raise Unauthorized(
            "missing API key: send it in the x-api-key header", code="missing_api_key"
        )
    principal = keys.resolve(key)
    if principal is None:
        raise Unauthorized("unknown or revoked API key", code="invalid_api_key")
    if not principal.can(scope_needed):
        raise Forbidden(
            f"this key lacks the '{scope_needed}' scope",
            code="missing_scope",
            details=[{"required_scope": scope_needed, "key_scopes": sorted(principal.scopes)}],
        )
    decision = limiter.hit(principal.key_id)
    if decision is not None:
        headers = decision.headers()
        if not decision.allowed:
            state.metrics.rate_limited.inc()
            raise RateLimited(
                f"rate limit of {decision.limit} requests per minute exceeded",
                headers=headers,
            )
        connection.scope.setdefault("state", {})[RATE_HEADERS_STATE] = headers
    connection.state.principal = principal
    return principal


async def scope_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    needed = handler.opt.get("scope")
    if needed:
        authenticate(connection, needed)


async def add_rate_limit_headers(message: Message, scope: Scope) -> None:
    """before_send hook: put RateLimit-* headers on every limited response."""
    if message["type"] != "http.response.start":
        return
    headers = scope.get("state", {}).get(RATE_HEADERS_STATE)
    if headers:
        raw = list(message.get("headers", []))
        raw.extend((k.lower().encode(), v.encode()) for k, v in headers.items())
        message["headers"] = raw


def provide_principal(request: Any) -> Principal:
    principal: Principal = request.state.principal
    return principal
