"""A real server runs analytics in query worker processes (``AVILA_QUERY_WORKERS``), and
replaces a worker that was killed. Which children are workers: the server's children other
than the store process (the one child holding the DuckDB file open) and multiprocessing's
resource tracker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY

RANGE = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-02-01T00:00:00Z"}


def _wait_gone(pid: int) -> None:
    """Until every thread of ``pid`` has exited (its files are closed; it may be a zombie)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if not os.listdir(f"/proc/{pid}/fd"):
                return
        except OSError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not exit")


def _workers(server: ServerProcess) -> set[int]:
    return set(server.query_worker_pids())


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=60)


def _load(client: httpx.Client) -> None:
    events = [
        {
            "event_id": f"w-{i}",
            "user_id": f"user-{i % 7}",
            "timestamp": f"2026-01-{1 + i % 28:02d}T10:00:00Z",
            "event_type": {"type": "PageView", "data": {"url": f"/p{i % 3}"}},
        }
        for i in range(50)
    ]
    assert client.post("/api/v1/events/batch", json={"events": events}).status_code == 202


def _overview(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/v1/analytics/overview", params=RANGE)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["total_events"] == 50 and body["unique_users"] == 7
    return body


def test_analytics_run_in_workers_that_are_replaced_when_killed(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(AVILA_QUERY_WORKERS="1")  # so the next query goes to the killed one
    with _client(server) as client:
        _load(client)
        first = _overview(client)
        workers = _workers(server)
        assert len(workers) == 1
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for pid in workers:
            _wait_gone(pid)
        # the server notices the exit and starts a new worker for the next query
        assert _overview(client) == first
        assert _workers(server) and not _workers(server) & workers
        assert client.get("/health").status_code == 200
        metrics = client.get("/metrics").text
        assert "avila_query_worker_exits 1.0" in metrics
        assert "avila_query_workers_busy 0.0" in metrics


def test_workers_start_on_first_use_one_per_query_running_at_once(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server()  # the default: 2 workers
    with _client(server) as client:
        _load(client)
        assert _workers(server) == set()
        _overview(client)
        assert len(_workers(server)) == 1


def test_without_workers_queries_run_in_the_server(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(AVILA_QUERY_WORKERS="0")
    with _client(server) as client:
        _load(client)
        _overview(client)
        assert _workers(server) == set()
