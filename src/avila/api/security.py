"""Authentication, scopes and rate limits for every route but /health and /metrics; CORS.

Routes declare the scope they need with ``opt={"scope": "read"}``; one guard refuses client
addresses blocked for guessing keys, resolves the key (counting an unknown one against the
address), checks the scope, counts the request against the key's rate limit and leaves the
caller's :class:`~avila.security.keys.Principal` in ``connection.state.principal``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import msgspec
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.constants import DEFAULT_ALLOWED_CORS_HEADERS
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Message, Scope

from avila.api.errors import error_body
from avila.errors import Forbidden, RateLimited, Unauthorized
from avila.security.auth_failures import AuthFailures
from avila.security.keys import KeyRegistry, Principal
from avila.security.ratelimit import RateDecision, RateLimiter

log = logging.getLogger("avila.api")

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


async def authenticate(
    connection: ASGIConnection[Any, Any, Any, Any], scope_needed: str
) -> Principal:
    """Resolve and authorise the caller, and count the request against its key's rate limit;
    raises 401/403/429 errors (503 when Redis does not answer). Nothing here waits on the event
    loop for Redis: the key lookup and the rate limit's count are awaited."""
    state = connection.app.state
    keys: KeyRegistry = state.key_store
    key = _check_presented(connection)
    principal = _authorise(connection, scope_needed, key, await keys.resolve_async(key))
    limiter: RateLimiter = state.rate_limiter
    _apply_limit(connection, principal, await limiter.hit_async(principal.key_id))
    return principal


def _check_presented(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The presented key, after refusing a blocked address and a missing key."""
    limiter: RateLimiter = connection.app.state.rate_limiter
    client = connection.client.host if connection.client else None
    _refuse_if_blocked(limiter.auth_failures, client, connection.app.state)
    key = presented_key(connection)
    if not key:
        raise Unauthorized(
            "missing API key: send it in the x-api-key header", code="missing_api_key"
        )
    return key


def _authorise(
    connection: ASGIConnection[Any, Any, Any, Any],
    scope_needed: str,
    key: str,
    principal: Principal | None,
) -> Principal:
    state = connection.app.state
    limiter: RateLimiter = state.rate_limiter
    client = connection.client.host if connection.client else None
    if principal is None:
        if limiter.auth_failures.record_failure(client, key):
            log.warning(
                "client blocked after failed authentications",
                extra={
                    "client": client,
                    "failures": limiter.auth_failures.limit,
                    "seconds": limiter.auth_failures.window_s,
                },
            )
        raise Unauthorized("unknown or revoked API key", code="invalid_api_key")
    if not principal.can(scope_needed):
        raise Forbidden(
            f"this key lacks the '{scope_needed}' scope",
            code="missing_scope",
            details=[{"required_scope": scope_needed, "key_scopes": sorted(principal.scopes)}],
        )
    return principal


def _apply_limit(
    connection: ASGIConnection[Any, Any, Any, Any],
    principal: Principal,
    decision: RateDecision | None,
) -> None:
    """Refuse the request over its key's limit (429), else note the RateLimit headers."""
    if decision is not None:
        headers = decision.headers()
        if not decision.allowed:
            connection.app.state.metrics.rate_limited.inc()
            raise RateLimited(
                f"rate limit of {decision.limit} requests per minute exceeded",
                headers=headers,
            )
        connection.scope.setdefault("state", {})[RATE_HEADERS_STATE] = headers
    connection.state.principal = principal


def _refuse_if_blocked(failures: AuthFailures, client: str | None, state: Any) -> None:
    retry_after = failures.retry_after(client)
    if retry_after is None:
        return
    state.metrics.rate_limited.inc()
    raise RateLimited(
        f"too many unknown API keys from this address ({failures.limit} within"
        f" {failures.window_s:g} s): every request from it is refused for {retry_after} s",
        details=[
            {
                "limit": failures.limit,
                "window_seconds": failures.window_s,
                "retry_after_seconds": retry_after,
            }
        ],
        headers={"Retry-After": str(retry_after)},
    )


async def scope_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    needed = handler.opt.get("scope")
    if needed:
        await authenticate(connection, needed)


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


#: Request headers a browser may always send (CORS-safelisted), allowed in every preflight.
_SAFELISTED_HEADERS = frozenset(h.lower() for h in DEFAULT_ALLOWED_CORS_HEADERS)
#: Longest header value quoted back in a refused preflight's error.
_QUOTE_MAX = 200


class CorsMiddleware:
    """CORS (``ENABLE_CORS``) for every HTTP answer, in place of Litestar's middleware, which
    answered refused preflights with a plain-text 400 and sent no ``Vary: Origin`` when the
    origin was refused or absent. The settings are a :class:`CORSConfig` all the same.

    - ``CORS_ORIGINS=*``: every answer carries ``Access-Control-Allow-Origin: *`` (and the
      exposed headers), whether the request sent an ``Origin`` or not, so the answer is the
      same for everyone and a shared cache may keep one copy (the Fetch standard's advice).
    - A list of origins: every answer carries ``Vary: Origin`` (merged into any ``Vary`` the
      route set), the allowed origins' answers ``Access-Control-Allow-Origin: <origin>``.
    - A preflight (``OPTIONS`` with ``Origin``) is answered here: 204 with the allowed methods
      and headers, or 400 ``cors_not_allowed`` in the API's error shape naming what was
      refused (the origin, a request header, the method).
    """

    def __init__(self, app: Any, config: CORSConfig) -> None:
        self.app = app
        self.config = config
        self.any_origin = config.is_allow_all_origins
        self.allowed_methods = sorted(set(config.allow_methods) | {"OPTIONS"})
        self.allowed_headers = sorted(set(config.allow_headers) | _SAFELISTED_HEADERS)
        # Answers to actual requests: the same bytes for every allowed origin but the origin.
        expose = ", ".join(sorted(set(config.expose_headers)))
        self.simple: list[tuple[bytes, bytes]] = (
            [(b"access-control-expose-headers", expose.encode())] if expose else []
        )
        self.preflight: list[tuple[bytes, bytes]] = [
            (b"access-control-allow-methods", ", ".join(self.allowed_methods).encode()),
            (b"access-control-allow-headers", ", ".join(self.allowed_headers).encode()),
            (b"access-control-max-age", str(config.max_age).encode()),
        ]

    def __getattr__(self, name: str) -> Any:
        # Tests and tools reach the wrapped Litestar app's attributes (state, openapi ...).
        return getattr(self.app, name)

    def _origin_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """The CORS headers of an answer to a request from ``origin`` (None: no Origin)."""
        if self.any_origin:
            return [(b"access-control-allow-origin", b"*")]
        if origin is not None and self.config.is_origin_allowed(origin):
            return [(b"access-control-allow-origin", origin.encode("latin-1"))]
        return []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
                break
        if origin is not None and scope["method"] == "OPTIONS":
            await self._answer_preflight(scope, origin, send)
            return
        added = self._origin_headers(origin)
        if added:
            added += self.simple
        vary = not self.any_origin

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_headers(message.get("headers", ()), added, vary)
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _answer_preflight(self, scope: Any, origin: str, send: Any) -> None:
        headers = dict(scope["headers"])
        method = headers.get(b"access-control-request-method", b"").decode("latin-1").strip()
        requested = [
            h.strip()
            for h in headers.get(b"access-control-request-headers", b"")
            .decode("latin-1")
            .split(",")
            if h.strip()
        ]
        refused: list[dict[str, Any]] = []
        if not self.any_origin and not self.config.is_origin_allowed(origin):
            refused.append(
                {
                    "header": "Origin",
                    "value": _quoted(origin),
                    "message": f"origin {_quoted(origin)!r} is not allowed (CORS_ORIGINS)",
                }
            )
        if method and method not in self.allowed_methods and not self.config.is_allow_all_methods:
            refused.append(
                {
                    "header": "Access-Control-Request-Method",
                    "value": _quoted(method),
                    "message": f"method {_quoted(method)!r} is not allowed",
                    "allowed": self.allowed_methods,
                }
            )
        unknown = [h for h in requested if h.lower() not in self.allowed_headers]
        if unknown and not self.config.is_allow_all_headers:
            listed = _quoted(", ".join(unknown))
            verb = "is" if len(unknown) == 1 else "are"
            refused.append(
                {
                    "header": "Access-Control-Request-Headers",
                    "value": listed,
                    "message": f"request header {listed!r} {verb} not allowed",
                    "allowed": self.allowed_headers,
                }
            )
        vary = not self.any_origin
        if refused:
            message = "CORS preflight refused: " + "; ".join(r["message"] for r in refused)
            body = msgspec.json.encode(error_body("cors_not_allowed", message, refused))
            head = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            await _respond(send, 400, _with_headers(head, [], vary), body)
            return
        head = _with_headers([], [*self._origin_headers(origin), *self.preflight], vary)
        await _respond(send, 204, head, b"")


def _quoted(value: str) -> str:
    return value if len(value) <= _QUOTE_MAX else value[:_QUOTE_MAX] + "..."


def _with_headers(
    headers: Iterable[tuple[bytes, bytes]], added: list[tuple[bytes, bytes]], vary: bool
) -> list[tuple[bytes, bytes]]:
    """``headers`` plus ``added`` (no route sets CORS headers itself); with ``vary``, ``Origin``
    is merged into the route's ``Vary`` (kept as it is when it names Origin already, or ``*``)."""
    out: list[tuple[bytes, bytes]] = []
    varies: list[bytes] = []
    for name, value in headers:
        if name.lower() == b"vary":
            varies.append(value)
        else:
            out.append((name, value))
    out.extend(added)
    if vary:
        names = {v.strip().lower() for value in varies for v in value.split(b",")}
        if not names & {b"origin", b"*"}:
            varies.append(b"Origin")
    if varies:
        out.append((b"vary", b", ".join(varies)))
    return out


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
