"""How a resource plugs into the application.

Each API module (``avila.api.events``, ``avila.api.analytics`` ...) may define:

- ``ROUTES``: Litestar route handlers (or Routers / WebSocket listeners);
- ``setup(ctx: AppContext) -> None``: create its services into ``ctx.state`` at app creation;
- ``async startup(ctx) / async shutdown(ctx)``: lifecycle, run in order / reverse order;
- ``DEPENDENCIES``: ``{name: callable(state) -> object}`` made injectable in handlers.

``avila.app.API_MODULES`` lists the modules; adding a resource is one line there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from avila.config import Settings
from avila.ingest.service import IngestService
from avila.metrics import Metrics
from avila.storage.base import Store


@dataclass
class AppContext:
    """What every resource can reach: settings, the store, metrics, the ingest service and a
    free-form ``state`` dict (also Litestar's ``app.state``) for services resources add."""

    settings: Settings
    store: Store
    metrics: Metrics
    ingest: IngestService
    state: dict[str, Any] = field(default_factory=dict)
