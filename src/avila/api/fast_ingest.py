"""The event-ingest routes answered in plain ASGI, in front of Litestar.

Why: a single-event request spent about 0.3 ms of the server's CPU in the framework (routing,
guard, dependency injection, response object, send wrappers) against about 0.05 ms in our own
ingest code, and the one server process is what limits ingest (benchmarks/RESULTS.md). This
layer answers ``POST /api/v1/events`` and ``POST /api/v1/events/batch`` itself when the request
is an ordinary one, and hands everything else to Litestar, which stays the one place that knows
every error: a request whose body is too large, does not decode, or whose key is missing,
unknown or lacks the ``ingest`` scope goes to Litestar unchanged (with the body it already read
replayed), before anything was counted or stored. So those answers are the framework's, byte for
byte. What this layer does answer itself, in the one error shape: 202 (with the RateLimit
headers the app's ``before_send`` hook adds), 429 from the key's rate limit, and the errors the
ingest service raises (backlog full, log unavailable, shutting down, a rejected single event).
CORS (``ENABLE_CORS``) is :class:`avila.api.security.CorsMiddleware`'s, in front of this layer:
it adds the CORS headers to this layer's answers as to Litestar's, so a browser's request (it
always sends ``Origin``) takes this path too.
The routes stay declared in :mod:`avila.api.events` (OpenAPI, docs, the slow path).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from avila.api.errors import error_body
from avila.api.events import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_SINGLE_BYTES
from avila.errors import AvilaError, RateLimited, ValidationFailed
from avila.ingest.service import IngestService, result_body
from avila.schemas.events import BATCH_DECODER, SINGLE_DECODER
from avila.security.keys import KeyRegistry
from avila.security.ratelimit import RateLimiter
from avila.storage.load_progress import REQUEST_POINT

log = logging.getLogger("avila.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SINGLE_PATH = "/api/v1/events"
BATCH_PATH = "/api/v1/events/batch"
_LIMITS = {SINGLE_PATH: MAX_SINGLE_BYTES, BATCH_PATH: MAX_BATCH_BYTES}
_JSON_HEADERS = [(b"content-type", b"application/json")]
_encode = msgspec.json.encode


class _Delegate(Exception):
    """Let Litestar answer this request (an error it knows how to explain)."""


class FastIngest:
    def __init__(
        self,
        app: ASGIApp,
        *,
        ingest: IngestService,
        keys: KeyRegistry,
        limiter: RateLimiter,
        metrics: Any,
    ) -> None:
        self.app = app
        self.ingest = ingest
        self.keys = keys
        self.limiter = limiter
        self.metrics = metrics

    def __getattr__(self, name: str) -> Any:
        # Tests and tools reach the wrapped Litestar app's attributes (state, openapi ...).
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or (path != SINGLE_PATH and path != BATCH_PATH)
        ):
            ingest_log = self.ingest.log
            if ingest_log is not None and scope["type"] == "http":
                # This request's reads wait for what was acknowledged before it, once. (Not
                # for a lifespan or websocket scope: tasks they start live on.)
                REQUEST_POINT.set(ingest_log.progress.durable)
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if b"content-encoding" in headers:
            await self.app(scope, receive, send)
            return
        body = _Body()
        try:
            await body.read(receive, headers, _LIMITS[path])
            await self._handle(scope, send, path, headers, body.data())
        except _Delegate:
            await self.app(scope, body.replay(receive), send)

    async def _handle(
        self, scope: Scope, send: Send, path: str, headers: dict[bytes, bytes], body: bytes
    ) -> None:
        single = path == SINGLE_PATH
        raws: list[msgspec.Raw | bytes]
        try:
            if single:
                raws = [SINGLE_DECODER.decode(body).event]
            else:
                raws = list(BATCH_DECODER.decode(body).events)
                if len(raws) > MAX_BATCH_EVENTS:
                    raise _Delegate
        except (msgspec.DecodeError, RecursionError):
            raise _Delegate from None
        scope["path_template"] = path  # the route label of the request metrics
        rate_headers: list[tuple[bytes, bytes]] = []
        client = scope.get("client")
        if self.limiter.auth_failures.retry_after(client[0] if client else None) is not None:
            # An address blocked for guessing keys: the guard answers its 429, for a right key
            # too, or this route would tell a guesser which guess was right.
            raise _Delegate
        try:
            principal = await self._principal(headers)
            decision = await self.limiter.hit_async(principal.key_id)
        except AvilaError as exc:  # shared state (Redis) down: 503, as on Litestar's routes
            log.error(
                "request failed", extra={"path": path, "code": exc.code, "error": exc.message}
            )
            await _send_error(send, exc, rate_headers)
            return
        if decision is not None:
            limit_headers = decision.headers()
            if not decision.allowed:
                self.metrics.rate_limited.inc()
                await _send_error(
                    send,
                    RateLimited(
                        f"rate limit of {decision.limit} requests per minute exceeded",
                        headers=limit_headers,
                    ),
                )
                return
            rate_headers = [(k.lower().encode(), v.encode()) for k, v in limit_headers.items()]
        try:
            if single:
                result = await self.ingest.ingest(
                    raws, principal.project_id, path_prefix="event", single=True
                )
                if result.rejected:
                    rejection = result.rejected[0]
                    raise ValidationFailed(
                        rejection.message,
                        code=rejection.code,
                        details=[{"path": rejection.path, "message": rejection.message}],
                    )
            else:
                result = await self.ingest.ingest(raws, principal.project_id)
        except AvilaError as exc:
            if exc.status >= 500:
                log.error(
                    "request failed", extra={"path": path, "code": exc.code, "error": exc.message}
                )
            await _send_error(send, exc, rate_headers)
            return
        except Exception:
            log.exception("unhandled error", extra={"path": path})
            await _send_error(
                send, AvilaError("internal server error", code="internal_error"), rate_headers
            )
            return
        await _send(send, 202, _encode(result_body(result, batch=not single)), rate_headers)

    async def _principal(self, headers: dict[bytes, bytes]) -> Any:
        """The caller's principal when the key is known and may ingest; else Litestar's guard
        explains (nothing counted yet)."""
        raw = headers.get(b"x-api-key")
        if not raw:
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() != b"bearer ":
                raise _Delegate
            raw = auth[7:].strip()
        try:
            key = raw.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            raise _Delegate from None
        principal = await self.keys.resolve_async(key) if key else None
        if principal is None or not principal.can("ingest"):
            raise _Delegate
        return principal


#: Headers this layer reads. A ``content-encoding`` (gzip) goes to Litestar's route, which
#: inflates it (avila.api.bodies).
_READ = (b"x-api-key", b"authorization", b"content-length", b"content-encoding")


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request headers this layer reads (names are lower case in ASGI; the first of a
    repeated header wins, as in Litestar's lookups)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _READ:
            found.setdefault(name, value)
    return found


class _Body:
    """The request body as read so far, so a delegated request can be replayed."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.complete = False

    def data(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)

    async def read(self, receive: Receive, headers: dict[bytes, bytes], limit: int) -> None:
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise _Delegate
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # a disconnect: Litestar handles it
                self.chunks.clear()
                raise _Delegate
            chunk = message.get("body", b"")
            if chunk:
                self.chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise _Delegate  # Litestar reads the rest and answers 413
            if not message.get("more_body", False):
                self.complete = True
                return

    def replay(self, receive: Receive) -> Receive:
        """``receive`` that first gives back what was read, then continues with the client's."""
        if not self.chunks and not self.complete:
            return receive
        pending: list[Message] = [
            {"type": "http.request", "body": self.data(), "more_body": not self.complete}
        ]

        async def replayed() -> Message:
            if pending:
                return pending.pop()
            return await receive()

        return replayed


async def _send(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send,
    exc: AvilaError,
    extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    """The one error shape (as :func:`avila.api.errors.error_response` builds it)."""
    headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    body = _encode(error_body(exc.code, exc.message, exc.details))
    await _send(send, exc.status, body, [*headers, *extra])
