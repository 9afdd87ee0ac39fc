"""Live fan-out: accepted events, metrics and alerts to subscribers (WebSocket clients)."""

from avila.live.activity import ActivityTracker
from avila.live.bus import CHANNELS, LiveBus, Subscription, get_bus
from avila.live.fanout import Fanout, LiveLimits, Outbox, TooManyConnections
from avila.live.feed import EventView, LiveFeed
from avila.live.filters import EventFilter
from avila.live.publisher import MetricsPublisher

__all__ = [
    "CHANNELS",
    "ActivityTracker",
    "EventFilter",
    "EventView",
    "Fanout",
    "LiveBus",
    "LiveFeed",
    "LiveLimits",
    "MetricsPublisher",
    "Outbox",
    "Subscription",
    "TooManyConnections",
    "get_bus",
]
