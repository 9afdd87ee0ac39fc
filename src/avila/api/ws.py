"""GET /ws: live events, metrics and alerts of the caller's project over a WebSocket.

Protocol (JSON text frames; full reference in docs/realtime.md)::

    client: {"type": "Subscribe" | "Unsubscribe",
             "payload": {"channels": ["events", ...], "filter": {...}?}}
            {"type": "Ping", "payload": {...}?}
    server: {"type": "Events", "payload": {"sampled": r, "events": [...], "dropped": n}}
            {"type": "Event" | "Metrics" | "Alert", "payload": {...}, "dropped": n}
            {"type": "Subscribed", "payload": {"channels": [...], "filter": {...}?}}
            {"type": "Pong", "payload": {"time": "...Z", ...the Ping's payload}}
            {"type": "Error", "payload": {"code", "message", "details"}}

The key comes as the subprotocol ``avila.key.<KEY>`` (offered with ``avila.v1``, which the server
accepts), as ``?api_key=`` or as ``x-api-key``; it needs the ``read`` scope. Auth failures and
refused connections accept, send an Error and close with 4401, 4403 or 4429; a connection that
cannot take a frame for ``AVILA_LIVE_STALL_TIMEOUT_SECONDS`` is told what it missed and closed
with 4408. An open connection re-checks its key every :data:`KEY_RECHECK_SECONDS` and is closed
like a refused one (Error ``invalid_api_key``, 4401) once the key is revoked. A bad client
message gets an Error; the connection stays open.

Data frames come from the connection's :class:`~avila.live.fanout.Outbox`; one sender task per
connection is the only thing that waits on the client, so ingestion never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from avila.api.component import AppContext
from avila.api.security import authenticate, presented_key
from avila.config import Settings
from avila.errors import AvilaError, Forbidden, Unauthorized
from avila.live import CHANNELS, ActivityTracker, LiveBus, LiveFeed, MetricsPublisher, get_bus
from avila.live.fanout import Fanout, LiveLimits, Outbox, TooManyConnections
from avila.live.filters import EventFilter, FilterError
from avila.security.keys import KeyRegistry, Principal

log = logging.getLogger("avila.live")

#: Largest client message accepted, in bytes.
MAX_CLIENT_MESSAGE = 64 * 1024
#: Subprotocol the server speaks (accepted when the client offers it).
SUBPROTOCOL = "avila.v1"
#: Close codes: auth (401, 403), caps and rate limit (429), stalled client (408).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_STALLED = 4408
CLOSE_TOO_MANY = 4429
_CLOSE_CODES = {401: CLOSE_UNAUTHORIZED, 403: CLOSE_FORBIDDEN, 429: CLOSE_TOO_MANY}
FANOUT_KEY = "live_fanout"
#: A stalled client gets at least this long to read its Error and close frame.
FAREWELL_MIN_SECONDS = 10.0
#: How often an open connection asks the key registry whether its key still holds. The
#: registry answers from memory and looks at the keys file (or Redis) at most every 0.25 s
#: (0.5 s), so a revoke closes the connection within about a second. One timer per
#: connection, never a check per frame: the fan-out's hot path is untouched.
KEY_RECHECK_SECONDS = 0.5
#: The scope a live connection needs.
LIVE_SCOPE = "read"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


def _error(code: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    return {
        "type": "Error",
        "payload": {"code": code, "message": message, "details": details or []},
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LiveSession:
    """One authenticated connection: a reader loop and a sender task over its outbox."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        fanout: Fanout,
        outbox: Outbox,
        credentials: tuple[KeyRegistry, str, Principal] | None = None,
    ) -> None:
        self.socket = socket
        self.fanout = fanout
        self.outbox = outbox
        self.stall_timeout = fanout.limits.stall_timeout_seconds
        #: The key registry, the key presented and whom it named at connect time: re-checked
        #: every KEY_RECHECK_SECONDS (None: never, for in-process uses without a key).
        self.credentials = credentials
        self._send_lock = asyncio.Lock()

    async def send_text(self, text: str) -> None:
        async with self._send_lock:
            await self.socket.send_data(text, mode="text")

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(_encode(message).decode())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pump = loop.create_task(self._pump(), name="ws-sender")
        reader = loop.create_task(self._read(), name="ws-reader")
        tasks: set[asyncio.Task[Any]] = {pump, reader}
        watcher: asyncio.Task[AvilaError] | None = None
        if self.credentials is not None:
            watcher = loop.create_task(self._watch_key(*self.credentials), name="ws-key")
            tasks.add(watcher)
        refused: AvilaError | None = None
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stalled = _returned(pump) is True
            refused = _returned(watcher) if watcher is not None else None
            reason = "stalled" if stalled else None
            if refused is not None:
                reason = "key_revoked" if refused.status < 500 else "key_unchecked"
            self.fanout.disconnect(self.outbox, reason)
        if stalled:
            await self._farewell()
        elif refused is not None:
            await self._refused(refused)

    async def _watch_key(self, keys: KeyRegistry, key: str, principal: Principal) -> AvilaError:
        """Sleep until the key no longer allows this connection; returns the error to close
        with: ``invalid_api_key`` for a revoked key, or the registry's own error (Redis down:
        503, as an HTTP request would get; a list that may miss a revocation is not trusted)."""
        # Connections opened together do not all wake together.
        await asyncio.sleep(KEY_RECHECK_SECONDS * random.random())
        while True:
            try:
                current = await keys.resolve_async(key)
            except AvilaError as exc:
                return exc
            except Exception:  # the keys file unreadable ...: refuse, as an HTTP request is
                log.exception("live connection: the API key could not be checked")
                return AvilaError("the API key of this connection could not be checked")
            if current is None or current.key_id != principal.key_id:
                return Unauthorized(
                    "the API key of this connection was revoked", code="invalid_api_key"
                )
            if not current.can(LIVE_SCOPE):
                return Forbidden(
                    f"this key lacks the '{LIVE_SCOPE}' scope",
                    code="missing_scope",
                    details=[{"required_scope": LIVE_SCOPE, "key_scopes": sorted(current.scopes)}],
                )
            await asyncio.sleep(KEY_RECHECK_SECONDS)

    async def _refused(self, exc: AvilaError) -> None:
        """Close a connection whose key no longer holds as a refused one is (4401 for a
        revoked key). The outbox is already gone, so nothing more is queued; the Error and the
        close frame wait for the client to read, up to FAREWELL_MIN_SECONDS."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                _refuse(self.socket, _error(exc.code, exc.message, exc.details), _close_code(exc)),
                FAREWELL_MIN_SECONDS,
            )

    async def _read(self) -> None:
        try:
            while True:
                message = await self.socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text, raw = message.get("text"), message.get("bytes")
                data = text if isinstance(text, str) else raw if isinstance(raw, bytes) else b""
                await self.send(self.handle(data))
        except (WebSocketDisconnect, OSError):
            return

    async def _pump(self) -> bool:
        """Write frames until the client goes away (False) or stalls (True)."""
        outbox = self.outbox
        try:
            while True:
                frame, text = await outbox.take()
                try:
                    async with asyncio.timeout(self.stall_timeout):
                        await self.send_text(text)
                except TimeoutError:
                    outbox.lose(frame)
                    return True
                self.fanout.sent(outbox, text, frame)
        except (WebSocketDisconnect, OSError):
            return False

    async def _farewell(self) -> None:
        """Tell a stalled client what it missed and close with 4408. Both wait until the
        client reads again; if it does not within another stall timeout, the handler ends and
        the server drops the connection without a close frame."""
        outbox = self.outbox
        message = (
            f"closed: no frame could be written for {self.stall_timeout:g} s; "
            f"{outbox.lost_events} events and {outbox.lost_messages} other messages missed"
        )
        details = [{"missed_events": outbox.lost_events, "missed_messages": outbox.lost_messages}]
        with contextlib.suppress(TimeoutError, WebSocketDisconnect, OSError):
            await asyncio.wait_for(
                self._goodbye(message, details), max(self.stall_timeout, FAREWELL_MIN_SECONDS)
            )

    async def _goodbye(self, message: str, details: list[Any]) -> None:
        await self.send(_error("client_stalled", message, details))
        reason = f"stalled: {self.outbox.lost_events} events missed"
        await self.socket.close(code=CLOSE_STALLED, reason=reason)

    def handle(self, data: str | bytes) -> dict[str, Any]:
        """The reply to one client message."""
        # The limit is in UTF-8 bytes; a text of at most MAX/4 characters cannot exceed it.
        size = len(data)
        if isinstance(data, str) and size > MAX_CLIENT_MESSAGE // 4:
            size = len(data.encode("utf-8", "surrogatepass"))
        if size > MAX_CLIENT_MESSAGE:
            return _error(
                "message_too_large", f"messages are limited to {MAX_CLIENT_MESSAGE} bytes"
            )
        try:
            message = _decode(data)
        except msgspec.DecodeError as exc:
            return _error("malformed_json", f"message is not valid JSON: {exc}")
        except RecursionError:
            # A few KB of brackets exceed the decoder's depth limit: answer, do not drop.
            return _error("invalid_message", "message is nested too deeply")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return _error(
                "invalid_message",
                'a message is an object {"type": "Subscribe"|"Unsubscribe"|"Ping", "payload": {...}}',
                [{"path": "type", "message": "a string is required"}],
            )
        kind = message["type"]
        payload = message.get("payload")
        if kind == "Ping":
            echo = payload if isinstance(payload, dict) else {}
            return {"type": "Pong", "payload": {**echo, "time": _now()}}
        if kind in ("Subscribe", "Unsubscribe"):
            return self._subscribe(kind, payload)
        return _error(
            "unknown_message_type",
            f"unknown message type {kind!r}; expected Subscribe, Unsubscribe or Ping",
            [{"path": "type", "message": f"unknown: {kind}"}],
        )

    def _subscribe(self, kind: str, payload: Any) -> dict[str, Any]:
        channels = payload.get("channels") if isinstance(payload, dict) else None
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            return _error(
                "invalid_message",
                f"{kind} needs payload.channels, a list of channel names",
                [{"path": "payload.channels", "message": "a list of strings is required"}],
            )
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            return _error(
                "unknown_channel",
                f"unknown channel(s) {', '.join(map(repr, unknown))}; channels are "
                + ", ".join(CHANNELS),
                [{"path": "payload.channels", "message": f"unknown: {c}"} for c in unknown],
            )
        outbox = self.outbox
        event_filter = outbox.filter
        if kind == "Subscribe" and isinstance(payload, dict) and "filter" in payload:
            try:
                event_filter = EventFilter.parse(payload["filter"])
            except FilterError as exc:
                return _error("invalid_filter", str(exc), exc.details)
        current = set(outbox.channels)
        wanted = current | set(channels) if kind == "Subscribe" else current - set(channels)
        self.fanout.set_channels(outbox, wanted, event_filter)
        reply: dict[str, Any] = {"channels": sorted(wanted)}
        if outbox.filter is not None:
            reply["filter"] = outbox.filter.to_json()
        return {"type": "Subscribed", "payload": reply}


def _returned(task: asyncio.Task[Any]) -> Any:
    """What ``task`` returned, or None when it was cancelled or raised."""
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


def _close_code(exc: AvilaError) -> int:
    return _CLOSE_CODES.get(exc.status, 4400 if exc.status < 500 else 1011)


async def _refuse(socket: WebSocket[Any, Any, Any], error: dict[str, Any], code: int) -> None:
    try:
        await socket.send_data(_encode(error).decode(), mode="text")
        await socket.close(code=code, reason=error["payload"]["message"][:120])
    except (WebSocketDisconnect, OSError):
        pass


@websocket("/ws", name="live")
async def live_socket(socket: WebSocket[Any, Any, Any], ctx: AppContext) -> None:
    offered = socket.scope.get("subprotocols") or []
    await socket.accept(subprotocols=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        principal = await authenticate(socket, LIVE_SCOPE)
    except AvilaError as exc:
        await _refuse(socket, _error(exc.code, exc.message, exc.details), _close_code(exc))
        return
    key = presented_key(socket)
    assert key is not None  # authenticate refused a connection without one
    fanout: Fanout = ctx.state[FANOUT_KEY]
    try:
        outbox = fanout.connect(principal.project_id, principal.key_id)
    except TooManyConnections as exc:
        error = _error(
            "too_many_connections",
            str(exc),
            [{"limit": exc.scope, "max_connections": exc.limit}],
        )
        await _refuse(socket, error, CLOSE_TOO_MANY)
        return
    keys: KeyRegistry = ctx.state["key_store"]
    await LiveSession(socket, fanout, outbox, (keys, key, principal)).run()


class _LiveCollector:
    """Prometheus view of the live stream: totals and per-project figures."""

    def __init__(self, bus: LiveBus, fanout: Fanout) -> None:
        self.bus = bus
        self.fanout = fanout

    def collect(self) -> Any:
        stats = dict(self.fanout.stats)
        yield GaugeMetricFamily(
            "avila_live_subscribers",
            "Live subscribers open (WebSocket connections and in-process subscriptions)",
            value=len(self.fanout) + len(self.bus),
        )
        yield CounterMetricFamily(
            "avila_live_dropped_messages",
            "Live events and messages dropped (oldest first) because a subscriber fell behind",
            value=self.bus.dropped_total() + sum(s.dropped_events for s in stats.values()),
        )
        per_project = [
            ("avila_live_project_connections", "Open live WebSocket connections", "connections"),
        ]
        for name, help_text, attr in per_project:
            gauge = GaugeMetricFamily(name, help_text, labels=["project"])
            for project, s in stats.items():
                gauge.add_metric([project], getattr(s, attr))
            yield gauge
        counters = [
            ("avila_live_frames", "Live frames written to WebSocket clients", "frames"),
            ("avila_live_bytes", "Live frame bytes written (UTF-8, before framing)", "bytes"),
            (
                "avila_live_dropped_events",
                "Live events lost by clients that fell behind (queue overflow or close)",
                "dropped_events",
            ),
            (
                "avila_live_sampled_out_events",
                "Live events left out of the events channel by sampling (per stream)",
                "sampled_out_events",
            ),
        ]
        for name, help_text, attr in counters:
            counter = CounterMetricFamily(name, help_text, labels=["project"])
            for project, s in stats.items():
                counter.add_metric([project], getattr(s, attr))
            yield counter
        closed = CounterMetricFamily(
            "avila_live_closed_connections",
            "Live connections closed or refused by the server, by reason",
            labels=["project", "reason"],
        )
        for project, s in stats.items():
            for reason, count in s.closed.items():
                closed.add_metric([project, reason], count)
        yield closed


def limits_from(settings: Settings) -> LiveLimits:
    return LiveLimits(
        flush_seconds=settings.live_flush_ms / 1000,
        max_events_per_second=settings.live_max_events_per_second,
        queue_frames=settings.live_queue_frames,
        stall_timeout_seconds=float(settings.live_stall_timeout_seconds),
        max_connections_per_project=settings.live_max_connections_per_project,
        max_connections_per_key=settings.live_max_connections_per_key,
    )


def setup(ctx: AppContext) -> None:
    """Hook the live feed into ingestion; create the fan-out and the metrics publisher."""
    bus = get_bus(ctx.state)
    fanout = Fanout(limits_from(ctx.settings))
    bus.attach(fanout)
    ctx.state[FANOUT_KEY] = fanout
    ctx.metrics.registry.register(_LiveCollector(bus, fanout))
    activity = ActivityTracker()
    ctx.ingest.listeners.append(LiveFeed(bus, activity))
    ctx.state["live_metrics"] = MetricsPublisher(bus, activity, ctx.metrics)


async def startup(ctx: AppContext) -> None:
    ctx.state[FANOUT_KEY].start()
    ctx.state["live_metrics"].start()


async def shutdown(ctx: AppContext) -> None:
    await ctx.state["live_metrics"].stop()
    await ctx.state[FANOUT_KEY].stop()


ROUTES = [live_socket]
