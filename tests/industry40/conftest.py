"""A real mosquitto broker and a server whose MQTT bridge subscribes to it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import TEST_KEY
from tests.industry40.test_i40_mqtt import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def bridged(broker: Broker, make_server: Callable[..., Any]) -> Iterator[httpx.Client]:
    """A client of a server whose bridge subscribes to ``broker``."""
    proc = make_server(
        AVILA_MQTT_URL=f"mqtt://127.0.0.1:{broker.port}",
        AVILA_MQTT_CLIENT_ID=f"avila-test-{uuid.uuid4().hex[:8]}",
    )
    with httpx.Client(base_url=proc.url, headers={"x-api-key": TEST_KEY}, timeout=30) as c:
        yield c
