"""Live fan-out: accepted events, metrics and alerts to subscribers (WebSocket clients)."""

from avila.live.bus import LiveBus, Subscription

__all__ = ["LiveBus", "Subscription"]
