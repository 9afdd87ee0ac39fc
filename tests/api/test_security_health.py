"""GET /health needs no key, so it tells the world only that storage is down, never why: the
store's error text can hold file paths, host names or a connection URL. The why is logged."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx

from avila import __version__
from avila.testing import ServerProcess


def _health_once_degraded(server: ServerProcess) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(server.url + "/health", timeout=10)
        if response.status_code != 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_health_says_storage_is_unavailable_and_logs_why(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server()
    healthy = httpx.get(server.url + "/health").json()
    (store,) = server.store_pids()
    os.kill(store, signal.SIGKILL)

    response = _health_once_degraded(server)
    assert response.status_code == 503
    body = response.json()
    assert set(body) == set(healthy) | {"storage_error"}
    assert body["status"] == "degraded" and body["version"] == __version__
    assert body["storage"] == "unavailable"
    assert body["storage_error"] == "storage_unavailable"
    assert "store process" not in response.text and str(server.data_dir) not in response.text
    assert "store process has exited" in server.log()
