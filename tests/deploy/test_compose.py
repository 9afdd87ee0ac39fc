"""deploy/docker-compose.yml read as ``docker compose`` would (Docker does not run here).

The services, profiles, health checks, volumes and ports are there, every setting it names is
a setting of ours, and the URLs the replicas get point at the services as those are configured.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from avila.config import Settings
from tests.deploy.deploy_files import (
    DEPLOY,
    clickhouse_urls_accepted,
    compose,
    interpolate,
    unknown_settings,
    url,
)

REPLICAS = ("avila-1", "avila-2")
BACKING = ("clickhouse", "redis", "mosquitto")
MONITORING = ("prometheus", "grafana")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return compose()


def services(spec: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = spec["services"]
    return result


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def container_port(service: dict[str, Any], host_port: int) -> int:
    for mapping in service.get("ports", []):
        host, container = str(mapping).split(":")
        if int(host) == host_port:
            return int(container)
    raise AssertionError(f"no mapping for host port {host_port}")


def test_services_and_profiles(spec: dict[str, Any]) -> None:
    svc = services(spec)
    assert set(svc) == {*REPLICAS, *BACKING, *MONITORING}
    for name in (*REPLICAS, *BACKING):
        assert "profiles" not in svc[name], f"{name} must start with a plain `up`"
    for name in MONITORING:
        assert svc[name]["profiles"] == ["monitoring"]


def test_images_are_pinned_and_replicas_build_ours(spec: dict[str, Any]) -> None:
    for name, service in services(spec).items():
        if name in REPLICAS:
            assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
            assert (DEPLOY / ".." / service["build"]["dockerfile"]).is_file()
            continue
        image, _, tag = service["image"].rpartition(":")
        assert image and re.search(r"\d", tag) and tag != "latest", (
            f"{name}: pin {service['image']}"
        )
    assert services(spec)["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")


def test_health_checks_and_start_order(spec: dict[str, Any]) -> None:
    svc = services(spec)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile  # the replicas' check
    for name in (*BACKING, *MONITORING):
        check = svc[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
    for name in REPLICAS:
        deps = svc[name]["depends_on"]
        assert set(deps) == set(BACKING)
        assert all(d["condition"] == "service_healthy" for d in deps.values())
    for name, service in svc.items():
        for dep, how in service.get("depends_on", {}).items():
            assert dep in svc, f"{name} depends on unknown {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in svc[dep] or dep in REPLICAS


def test_volumes_are_declared_and_bind_mounts_exist(spec: dict[str, Any]) -> None:
    declared = set(spec["volumes"])
    used: set[str] = set()
    for name, service in services(spec).items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} is not in deploy/"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
    assert used == declared
    svc = services(spec)
    assert any(m.endswith(":/var/lib/clickhouse") for m in svc["clickhouse"]["volumes"])
    assert any(m.endswith(":/data") for m in svc["redis"]["volumes"])


def test_host_ports_are_unique(spec: dict[str, Any]) -> None:
    host_ports = [
        str(m).rsplit(":", 1)[0] for s in services(spec).values() for m in s.get("ports", [])
    ]
    assert len(host_ports) == len(set(host_ports)), host_ports


def test_replicas_share_everything_but_their_log_and_mqtt_client_id(spec: dict[str, Any]) -> None:
    svc = services(spec)
    envs = [env(svc[name]) for name in REPLICAS]
    per_replica = {"AVILA_MQTT_CLIENT_ID"}
    shared = [{k: v for k, v in e.items() if k not in per_replica} for e in envs]
    assert shared[0] == shared[1]
    assert envs[0]["AVILA_MQTT_CLIENT_ID"] != envs[1]["AVILA_MQTT_CLIENT_ID"]
    # Each replica's ingest log (a 202 = fsync'd there) lives on its own volume under /data.
    data_volumes = [
        next(m.split(":")[0] for m in svc[name]["volumes"] if m.endswith(":/data"))
        for name in REPLICAS
    ]
    assert len(set(data_volumes)) == len(REPLICAS)
    assert envs[0]["AVILA_DATA_DIR"] == "/data"
    assert envs[0]["AVILA_INGEST_LOG_DIR"].startswith("/data/")
    # Each answers on its own host port; inside, on the image's PORT.
    exposed = re.search(r"^EXPOSE (\d+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert exposed
    for name in REPLICAS:
        (mapping,) = svc[name]["ports"]
        assert int(str(mapping).split(":")[1]) == int(exposed.group(1)) == Settings.port


def test_every_setting_named_is_ours(spec: dict[str, Any]) -> None:
    names: set[str] = set()
    for service in services(spec).values():
        names |= set(env(service))
    assert "AVILA_STORAGE_URL" in names and "AVILA_REDIS_URL" in names
    assert unknown_settings(names) == []


def test_replica_urls_point_at_the_services_as_configured(spec: dict[str, Any]) -> None:
    svc = services(spec)
    replica = env(svc["avila-1"])
    ch = env(svc["clickhouse"])
    storage = url(replica["AVILA_STORAGE_URL"])
    assert storage.scheme == "clickhouse" and storage.hostname == "clickhouse"
    assert storage.port == container_port(svc["clickhouse"], 8123) == 8123  # ClickHouse HTTP
    assert storage.username == ch["CLICKHOUSE_USER"]
    assert storage.password == ch["CLICKHOUSE_PASSWORD"]
    assert storage.path == "/" + ch["CLICKHOUSE_DB"]

    redis = url(replica["AVILA_REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    assert "--appendonly" in svc["redis"]["command"]

    mqtt = url(replica["AVILA_MQTT_URL"])
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    listener = re.search(r"^listener (\d+) 0\.0\.0\.0$", conf, re.M)
    assert listener and (mqtt.hostname, mqtt.port) == ("mosquitto", int(listener.group(1)))
    assert re.search(r"^persistence true$", conf, re.M)
    assert replica["AVILA_MQTT_SHARE_GROUP"]


@pytest.mark.xfail(
    not clickhouse_urls_accepted(),
    reason="clickhouse:// URLs arrive with i10-store; runs for real once it is merged",
    raises=Exception,
    strict=True,
)
def test_replica_environment_is_valid_settings(spec: dict[str, Any]) -> None:
    for name in REPLICAS:
        settings = Settings.from_env(env(services(spec)[name]), env_file=None)
        assert settings.storage_url.startswith("clickhouse://")


def test_interpolation_refuses_variables_without_defaults() -> None:
    assert interpolate("a: ${X:-1} b: $$SYS") == "a: 1 b: $SYS"
    with pytest.raises(AssertionError):
        interpolate("a: ${X}")
