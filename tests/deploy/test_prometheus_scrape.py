"""The monitoring profile end to end, without Docker: a real Prometheus (Debian package; `.ci/run`
installs it) runs deploy/prometheus/prometheus.yml with its targets pointed at two real
``avila serve`` replicas under traffic, and every query of the Grafana dashboard is evaluated by
that Prometheus. Each must parse and evaluate, and each but the 5xx one must return series
(nothing here answers 5xx)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from avila.testing import ServerProcess
from avila.testing.server import free_port
from tests.conftest import TEST_KEY
from tests.deploy.deploy_files import DEPLOY
from tests.foundation.helpers import page_view
from tests.live.ws_client import open_ws

PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "avila.json"
WAIT_S = 60  # functional timeout: series appear within a few 1 s scrapes


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: install the Debian package `prometheus` (see .ci/run)"
    return path


def test_promtool_accepts_the_deploy_config() -> None:
    check = subprocess.run(
        [tool("promtool"), "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    started = []
    try:
        for i in range(2):
            env = {"API_KEYS": TEST_KEY, "RATE_LIMIT_PER_MINUTE": "0"}
            started.append(ServerProcess(tmp_path_factory.mktemp(f"replica{i}"), env=env).start())
        yield started
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture(scope="module")
def prometheus(
    replicas: list[ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Prometheus on the deploy config; only the scrape interval and the targets' addresses
    (compose service names there) are changed."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    (group,) = job["static_configs"]
    assert len(group["targets"]) == len(replicas)
    group["targets"] = [f"127.0.0.1:{proc.port}" for proc in replicas]
    workdir = tmp_path_factory.mktemp("prometheus")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert proc.poll() is None, (workdir / "prometheus.log").read_text()
            try:
                if httpx.get(base + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prometheus not ready"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def query(base: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(base + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_every_dashboard_query_evaluates_on_scraped_replicas(
    replicas: list[ServerProcess], prometheus: str
) -> None:
    stop = threading.Event()

    def traffic() -> None:
        clients = [
            httpx.Client(base_url=p.url, headers={"x-api-key": TEST_KEY}, timeout=30)
            for p in replicas
        ]
        while not stop.is_set():
            for client in clients:
                assert client.post("/api/v1/events", json={"event": page_view()}).status_code == 202
                assert client.post("/api/v1/events", json={"event": {}}).status_code == 422
            stop.wait(0.25)
        for client in clients:
            client.close()

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    expected = {q for q in dashboard_queries() if 'status=~"5.."' not in q}
    empty: set[str] = set(expected)
    try:
        with open_ws(replicas[0]):
            deadline = time.monotonic() + WAIT_S
            while empty and time.monotonic() < deadline:
                empty = {q for q in empty if not query(prometheus, q)}
                time.sleep(1)
            up = query(prometheus, 'up{job="avila"}')
            per_replica = query(
                prometheus,
                'sum by (instance) (rate(avila_events_total{outcome="accepted"}[1m]))',
            )
    finally:
        stop.set()
        sender.join(30)
    assert empty == set(), f"no series for {sorted(empty)}"
    for expr in dashboard_queries():  # the 5xx query too: it parses and evaluates
        query(prometheus, expr)
    assert sorted(s["value"][1] for s in up) == ["1", "1"], up
    assert len(per_replica) == 2 and all(float(s["value"][1]) > 0 for s in per_replica)


def test_a_broken_query_is_refused(prometheus: str) -> None:
    """The evaluation above can fail: Prometheus rejects a malformed expression."""
    answer = httpx.get(
        prometheus + "/api/v1/query", params={"query": "sum by (le (rate(x[1m]))"}, timeout=10
    ).json()
    assert answer["status"] == "error"


def test_metrics_pass_promtool_lint(replicas: list[ServerProcess], tmp_path: Path) -> None:
    text = httpx.get(replicas[0].url + "/metrics", timeout=10).text
    lint = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
