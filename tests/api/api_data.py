"""Seed-shaped events and a dedicated server for the analytics and users API tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from avila.security.keys import KeyStore
from avila.testing import ServerProcess

ADMIN_KEY = "test-key-all-scopes"
SEED_KEY = "dev-key-123"
# Whole hours, far enough back that a +7 days return visit is still in the past.
T0 = (datetime.now(UTC) - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)


def event(
    user: str, at: datetime, etype: str = "PageView", *, session: str | None = None, **data: Any
) -> dict[str, Any]:
    """One event in the seed's shape; ``data`` is ``event_type.data``."""
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "event_type": {"type": etype, "data": data},
        "context": {
            "device": {
                "device_type": "desktop",
                "browser": "Firefox" if user == "u3" else "Chrome",
            },
            "location": {"country": "BR", "city": "Recife"},
            "referrer": "https://search.example/",
        },
    }
    if session is not None:
        body["session_id"] = session
    return body


def project_a_events() -> list[dict[str, Any]]:
    """u1 completes the shop funnel and returns a week later; u2 stops at /product; u3 only
    visits /; u4 buys first and visits / a week later."""
    m = timedelta(minutes=1)
    return [
        event("u1", T0, url="/"),
        event("u1", T0 + m, url="/product"),
        event("u1", T0 + 2 * m, "AddToCart", product_id="p1", quantity=1, price=50.0),
        event("u1", T0 + 3 * m, "Purchase", order_id="o1", revenue=50.0, currency="BRL"),
        event("u1", T0 + timedelta(days=7), url="/"),
        event("u2", T0, url="/", session="s-2"),
        event("u2", T0 + 5 * m, url="/product", session="s-2"),
        event("u3", T0 + timedelta(hours=1), url="/"),
        event("u4", T0 + timedelta(days=2), "Purchase", order_id="o2", revenue=20.0),
        event("u4", T0 + timedelta(days=7), url="/"),
    ]


def project_b_events() -> list[dict[str, Any]]:
    """Project B reuses A's user ids and URLs: isolation must hold by project, not by id."""
    return [
        event("u1", T0, url="/"),
        event("u1", T0 + timedelta(minutes=1), url="/product"),
        event("b1", T0, url="/"),
        event("b1", T0 + timedelta(minutes=2), "Purchase", order_id="o1", revenue=999.0),
    ]


@dataclass
class Api:
    server: ServerProcess
    key_b: str
    read_only_key: str

    def client(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers={"x-api-key": key}, timeout=30)


def ingest(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    response = client.post("/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events), response.text


@contextmanager
def analytics_server(data_dir: Path, storage_url: str = "") -> Iterator[Api]:
    """A server with project A (``default``: the env keys) and project B loaded; on the default
    DuckDB store, or ``storage_url`` (e.g. ``chdb:///dir``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = KeyStore(data_dir / "keys.sqlite")
    key_b, _ = keys.create("projb", ["ingest", "read"])
    read_only, _ = keys.create("default", ["read"])
    server = ServerProcess(
        data_dir,
        env={
            "API_KEYS": f"{ADMIN_KEY},{SEED_KEY}",
            "RATE_LIMIT_PER_MINUTE": "0",
            **({"AVILA_STORAGE_URL": storage_url} if storage_url else {}),
        },
    )
    server.start()
    try:
        api = Api(server, key_b, read_only)
        with api.client() as a, api.client(key_b) as b:
            ingest(a, project_a_events())
            ingest(b, project_b_events())
        yield api
    finally:
        server.stop()


def assert_error(response: httpx.Response, status: int, code: str, path: str | None = None) -> None:
    """The one error shape: ``{"error": {"code", "message", "details"}}``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if path is not None:
        assert path in [d.get("path") for d in body["error"]["details"]], body
