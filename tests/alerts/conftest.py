"""One real server for the alert tests, wired to a real SMTP server; a fresh project per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from avila.security.keys import KeyStore
from avila.testing import ServerProcess
from tests.alerts.receivers import HttpReceiver, SmtpSink
from tests.conftest import server_for

SMTP_FROM = "alerts@avila.test"
#: Server settings of the module (fixed before any test ran; see docs/alerts.md).
DELIVERY_TIMEOUT_SECONDS = 1.5
DELIVERY_ATTEMPTS = 3


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture(scope="session")
def receiver() -> Iterator[HttpReceiver]:
    http = HttpReceiver()
    yield http
    http.close()


@pytest.fixture(scope="session")
def alerts_server(
    tmp_path_factory: pytest.TempPathFactory, smtp: SmtpSink
) -> Iterator[ServerProcess]:
    yield from server_for(
        tmp_path_factory,
        "alerts-server",
        AVILA_SMTP_HOST="127.0.0.1",
        AVILA_SMTP_PORT=str(smtp.port),
        AVILA_SMTP_TLS="none",
        AVILA_SMTP_FROM=SMTP_FROM,
        AVILA_ALERTS_DELIVERY_TIMEOUT_SECONDS=str(DELIVERY_TIMEOUT_SECONDS),
        AVILA_ALERTS_DELIVERY_ATTEMPTS=str(DELIVERY_ATTEMPTS),
    )


@pytest.fixture
def new_project(alerts_server: ServerProcess) -> Iterator[Callable[..., httpx.Client]]:
    """``new_project(scopes=...)``: a client with a key of a project no other test uses (or of
    ``project=``)."""
    clients: list[httpx.Client] = []
    project = f"p-{uuid.uuid4().hex[:10]}"

    def factory(
        scopes: tuple[str, ...] = ("ingest", "read", "admin"), project: str = project
    ) -> httpx.Client:
        key, _ = KeyStore(alerts_server.data_dir / "keys.sqlite").create(project, list(scopes))
        client = httpx.Client(base_url=alerts_server.url, headers={"x-api-key": key}, timeout=30)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
