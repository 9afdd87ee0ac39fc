"""GET /ws: live events, metrics and alerts of the caller's project over a WebSocket.

Protocol (JSON text frames)::

    client: {"type": "Subscribe" | "Unsubscribe", "payload": {"channels": ["events", ...]}}
            {"type": "Ping", "payload": {...}?}
    server: {"type": "Event" | "Metrics" | "Alert", "payload": {...}, "dropped": n}
            {"type": "Subscribed", "payload": {"channels": [...]}}
            {"type": "Pong", "payload": {"time": "...Z", ...the Ping's payload}}
            {"type": "Error", "payload": {"code", "message", "details"}}

The key comes as ``?api_key=`` (browsers cannot set headers on a WebSocket) or ``x-api-key``;
it needs the ``read`` scope. Auth failures accept, send an Error and close with 4401 (401),
4403 (403) or 4429 (429). A bad client message gets an Error; the connection stays open.

Each connection has a bounded queue on the live bus (oldest dropped; ``dropped`` counts them),
and one sender task that is the only writer of data messages. A client that stops reading
blocks only its own sender (uvicorn applies TCP back-pressure); ingestion never waits for it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from avila.api.component import AppContext
from avila.api.security import authenticate
from avila.errors import AvilaError
from avila.live import CHANNELS, ActivityTracker, LiveBus, LiveFeed, MetricsPublisher, get_bus

#: Messages queued per connection before the oldest are dropped.
QUEUE_SIZE = 1000
#: Largest client message accepted, in bytes.
MAX_CLIENT_MESSAGE = 64 * 1024
_MESSAGE_TYPES = {"events": "Event", "metrics": "Metrics", "alerts": "Alert"}
_CLOSE_CODES = {401: 4401, 403: 4403, 429: 4429}

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
    """One authenticated connection: its subscription, a reader loop and a sender task."""

    def __init__(self, socket: WebSocket[Any, Any, Any], bus: LiveBus, project_id: str) -> None:
        self.socket = socket
        self.bus = bus
        self.sub = bus.subscribe(project_id, (), maxsize=QUEUE_SIZE)
        self._send_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.socket.send_data(_encode(message).decode(), mode="text")

    async def run(self) -> None:
        sender = asyncio.get_running_loop().create_task(self._pump(), name="ws-sender")
        try:
            while True:
                message = await self.socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text, raw = message.get("text"), message.get("bytes")
                data = text if isinstance(text, str) else raw if isinstance(raw, bytes) else b""
                reply = self.handle(data)
                if sender.done():  # the client went away while we were reading
                    return
                await self.send(reply)
        except (WebSocketDisconnect, OSError):
            return
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            self.bus.unsubscribe(self.sub)

    async def _pump(self) -> None:
        sub = self.sub
        try:
            while True:
                channel, payload = await sub.get()
                await self.send(
                    {"type": _MESSAGE_TYPES[channel], "payload": payload, "dropped": sub.dropped}
                )
        except (WebSocketDisconnect, OSError):
            return

    def handle(self, data: str | bytes) -> dict[str, Any]:
        """The reply to one client message."""
        if len(data) > MAX_CLIENT_MESSAGE:
            return _error(
                "message_too_large", f"messages are limited to {MAX_CLIENT_MESSAGE} bytes"
            )
        try:
            message = _decode(data)
        except msgspec.DecodeError as exc:
            return _error("malformed_json", f"message is not valid JSON: {exc}")
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
            current = set(self.sub.channels)
            wanted = current | set(channels) if kind == "Subscribe" else current - set(channels)
            self.bus.set_channels(self.sub, wanted)
            return {"type": "Subscribed", "payload": {"channels": sorted(wanted)}}
        return _error(
            "unknown_message_type",
            f"unknown message type {kind!r}; expected Subscribe, Unsubscribe or Ping",
            [{"path": "type", "message": f"unknown: {kind}"}],
        )


@websocket("/ws", name="live")
async def live_socket(socket: WebSocket[Any, Any, Any], ctx: AppContext) -> None:
    await socket.accept()
    try:
        principal = authenticate(socket, "read")
    except AvilaError as exc:
        code = _CLOSE_CODES.get(exc.status, 4400 if exc.status < 500 else 1011)
        try:
            await socket.send_data(
                _encode(_error(exc.code, exc.message, exc.details)).decode(), mode="text"
            )
            await socket.close(code=code, reason=exc.message[:120])
        except (WebSocketDisconnect, OSError):
            pass
        return
    await LiveSession(socket, get_bus(ctx.state), principal.project_id).run()


class _LiveCollector:
    """Prometheus view of the bus: subscribers and messages dropped for slow ones."""

    def __init__(self, bus: LiveBus) -> None:
        self.bus = bus

    def collect(self) -> Any:
        yield GaugeMetricFamily(
            "avila_live_subscribers", "Live (WebSocket) subscriptions open", value=len(self.bus)
        )
        yield CounterMetricFamily(
            "avila_live_dropped_messages",
            "Live messages dropped (oldest first) because a subscriber fell behind",
            value=self.bus.dropped_total(),
        )


def setup(ctx: AppContext) -> None:
    """Hook the live feed into ingestion; create the metrics publisher."""
    bus = get_bus(ctx.state)
    ctx.metrics.registry.register(_LiveCollector(bus))
    activity = ActivityTracker()
    ctx.ingest.listeners.append(LiveFeed(bus, activity))
    ctx.state["live_metrics"] = MetricsPublisher(bus, activity, ctx.metrics)


async def startup(ctx: AppContext) -> None:
    ctx.state["live_metrics"].start()


async def shutdown(ctx: AppContext) -> None:
    await ctx.state["live_metrics"].stop()


ROUTES = [live_socket]
