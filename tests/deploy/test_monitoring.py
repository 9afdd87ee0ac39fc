"""The `monitoring` profile: Prometheus scrapes both replicas, Grafana gets a provisioned
datasource and the Avila dashboard, and every query of that dashboard names series (and labels)
that a real server's /metrics exposes after real traffic."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from avila.testing import ServerProcess
from tests.conftest import TEST_KEY
from tests.deploy.deploy_files import DEPLOY, compose
from tests.foundation.helpers import page_view
from tests.live.ws_client import open_ws

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "avila.json"
# Labels Prometheus adds to every scraped series, and the histogram bucket label.
SCRAPE_LABELS = {"instance", "job"}


def prometheus_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    return data


def mount_target(service: dict[str, Any], source: str) -> str:
    for mount in service["volumes"]:
        parts = str(mount).split(":")
        if parts[0] == source:
            return parts[1]
    raise AssertionError(f"{source} is not mounted")


def test_prometheus_scrapes_every_replica_without_credentials() -> None:
    config = prometheus_config()
    services = compose()["services"]
    replicas = sorted(name for name, s in services.items() if "build" in s)
    assert len(replicas) == 2
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert not {"basic_auth", "authorization", "bearer_token", "oauth2"} & set(job)
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    container_ports = {
        name: int(str(services[name]["ports"][0]).split(":")[1]) for name in replicas
    }
    assert sorted(targets) == sorted(f"{n}:{container_ports[n]}" for n in replicas)
    prom = services["prometheus"]
    assert mount_target(prom, "./prometheus/prometheus.yml") == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]


def test_grafana_provisioning_matches_the_mounts() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    assert mount_target(grafana, "./grafana/provisioning") == "/etc/grafana/provisioning"
    dashboards_dir = mount_target(grafana, "./grafana/dashboards")
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    prom_port = int(str(services["prometheus"]["ports"][0]).split(":")[1])
    assert source["url"] == f"http://prometheus:{prom_port}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "avila.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == dashboards_dir
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD.name}"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


_SERIES = re.compile(r"\b(avila_[a-z0-9_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def test_dashboard_covers_what_operators_watch() -> None:
    text = "\n".join(queries())
    for needle in (
        "avila_events_total",  # ingest rate
        'avila_http_requests_total{status="202"}',
        'avila_http_requests_total{status=~"4.."}',
        'avila_http_requests_total{status=~"5.."}',
        "histogram_quantile(0.99, sum by (le, route) (rate(avila_http_request_duration_seconds_bucket",
        "avila_ingest_backlog_events",
        "avila_ingest_loader_rows_per_second",
        "avila_live_subscribers",
    ):
        assert needle in text, needle
    for query in queries():
        assert query.count("(") == query.count(")"), query


@pytest.fixture(scope="module")
def scraped(server: ServerProcess) -> dict[str, set[str]]:
    """Series name -> label names on a real server's /metrics after ingest, a 4xx, and a
    WebSocket client; fetched without a key (the server has API_KEYS set), as the Prometheus
    job does."""
    with httpx.Client(base_url=server.url, headers={"x-api-key": TEST_KEY}, timeout=30) as client:
        ok = client.post("/api/v1/events", json={"event": page_view()})
        assert ok.status_code == 202, ok.text
        assert client.post("/api/v1/events", json={"event": {}}).status_code == 422
        with open_ws(server):
            response = httpx.get(server.url + "/metrics", timeout=30)
    assert response.status_code == 200, "Prometheus scrapes /metrics without a key"
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_dashboard_queries_name_only_exposed_series_and_labels(
    scraped: dict[str, set[str]],
) -> None:
    for query in queries():
        names = _SERIES.findall(query)
        assert names, query
        labels_used: dict[str, set[str]] = {}
        for name, matchers in names:
            assert name in scraped, f"{name} is not on /metrics ({query})"
            labels_used.setdefault(name, set()).update(_MATCHER.findall(matchers or ""))
        for name, labels in labels_used.items():
            assert labels <= scraped[name], f"{name} has no label {labels - scraped[name]}"
        grouped = {g.strip() for group in _BY.findall(query) for g in group.split(",")}
        available = set().union(*(scraped[n] for n, _ in names)) | SCRAPE_LABELS
        assert grouped - {""} <= available, f"grouping by unknown labels in {query}"


def test_the_query_check_can_fail(scraped: dict[str, set[str]]) -> None:
    """A misspelt series and an unknown label are caught by the same parsing."""
    ((name, _),) = _SERIES.findall("rate(avila_events_totl[1m])")
    assert name not in scraped
    ((_, matchers),) = _SERIES.findall('avila_events_total{result="x"}')
    assert not set(_MATCHER.findall(matchers)) <= scraped["avila_events_total"]
