"""deploy/k8s/ validated offline against the Kubernetes OpenAPI schemas (kubernetes-validate
ships them; no cluster, no network), plus the cross-references a schema cannot see: selectors,
named ports, ConfigMap/Secret keys, namespaces, and the URLs the API gets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.deploy_files import K8S, k8s_documents, k8s_index, unknown_settings, url

NAMESPACE = "analytics"
DEPLOYMENT = "avila-analytics"
# The newest schemas shipped, and an older release still in common use (HPA autoscaling/v2 and
# PDB policy/v1 exist in both).
VERSIONS = ("1.37.0", "1.30.0")
DOCS = k8s_documents()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "path,doc", DOCS, ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in DOCS]
)
def test_manifest_validates_strictly(path: Path, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_validation_rejects_a_misspelt_field_and_a_missing_one() -> None:
    """The check above can fail: a typo and a missing required field are refused."""
    deployment = k8s_index()[("Deployment", DEPLOYMENT)]
    typo = copy.deepcopy(deployment)
    typo["spec"]["replica"] = typo["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, VERSIONS[0], strict=True)
    missing = copy.deepcopy(deployment)
    del missing["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(missing, VERSIONS[0], strict=True)


def test_namespace_comes_first_and_holds_everything() -> None:
    first_path, first = DOCS[0]
    assert (first["kind"], first["metadata"]["name"]) == ("Namespace", NAMESPACE), first_path
    for path, doc in DOCS[1:]:
        assert doc["metadata"]["namespace"] == NAMESPACE, f"{path.name}: {doc['kind']}"


def workloads() -> list[dict[str, Any]]:
    return [d for _, d in DOCS if d["kind"] in ("Deployment", "StatefulSet")]


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return containers


def api_container() -> dict[str, Any]:
    (container,) = pod_containers(k8s_index()[("Deployment", DEPLOYMENT)])
    return container


def test_api_deployment_replicas_probes_and_resources() -> None:
    deployment = k8s_index()[("Deployment", DEPLOYMENT)]
    assert deployment["spec"]["replicas"] == 3
    container = api_container()
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health" and check["port"] in port_names, probe
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    # The pod template's labels are what its selector, Service, PDB and spread select.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_hpa_and_pdb_act_on_the_deployment() -> None:
    index = k8s_index()
    deployment = index[("Deployment", DEPLOYMENT)]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = index[("HorizontalPodAutoscaler", DEPLOYMENT)]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", DEPLOYMENT)
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    # CPU utilisation is relative to the request, so a request must be set.
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "cpu" in api_container()["resources"]["requests"]
    pdb = index[("PodDisruptionBudget", DEPLOYMENT)]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] >= 1  # a drain can proceed


def test_services_select_pods_and_name_their_ports() -> None:
    for _, service in (d for d in DOCS if d[1]["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matches = [
            w
            for w in workloads()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in pod_containers(matches[0]) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: {port}"
    for workload in workloads():
        if workload["kind"] == "StatefulSet":
            assert ("Service", workload["spec"]["serviceName"]) in k8s_index()


def test_stateful_backends_keep_their_data() -> None:
    index = k8s_index()
    for name, mount in (("clickhouse", "/var/lib/clickhouse"), ("redis", "/data")):
        statefulset = index[("StatefulSet", name)]
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        mounts = {m["name"]: m["mountPath"] for m in pod_containers(statefulset)[0]["volumeMounts"]}
        assert mounts[claim["metadata"]["name"]] == mount


def test_images_are_pinned() -> None:
    for workload in workloads():
        for container in pod_containers(workload):
            image = container["image"]
            if workload["metadata"]["name"] == DEPLOYMENT:
                assert image.startswith("avila-analytics:")  # built from deploy/Dockerfile
                continue
            tag = image.rpartition(":")[2]
            assert tag != "latest" and any(ch.isdigit() for ch in tag), image


def referenced_config() -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[str]]:
    """(ConfigMap, key) and (Secret, key) references, and whole ConfigMaps used."""
    config_keys: set[tuple[str, str]] = set()
    secret_keys: set[tuple[str, str]] = set()
    whole: set[str] = set()
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                whole.add(volume["configMap"]["name"])
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                whole.add(source["configMapRef"]["name"])
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    secret_keys.add((ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]))
                if "configMapKeyRef" in ref:
                    config_keys.add((ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]))
    return config_keys, secret_keys, whole


def test_configmap_and_secret_references_resolve() -> None:
    index = k8s_index()
    config_keys, secret_keys, whole = referenced_config()
    for name in whole:
        assert ("ConfigMap", name) in index, name
    for name, key in config_keys:
        assert key in index[("ConfigMap", name)]["data"], (name, key)
    for name, key in secret_keys:
        assert key in index[("Secret", name)]["stringData"], (name, key)
    assert secret_keys, "the API's secrets come from a Secret"


def api_environment() -> dict[str, str]:
    """What the API container sees: its ConfigMaps, then its env (Secret values resolved)."""
    index = k8s_index()
    container = api_container()
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values.update(index[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for var in container["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            values[var["name"]] = index[("Secret", ref["name"])]["stringData"][ref["key"]]
        elif "value" in var:
            values[var["name"]] = var["value"]
        else:
            values[var["name"]] = "<downward api>"
    return values


def test_every_setting_named_is_ours() -> None:
    names = set(api_environment())
    assert {"AVILA_STORAGE_URL", "AVILA_REDIS_URL", "API_KEYS"} <= names
    assert unknown_settings(names) == []


def test_each_pod_has_its_own_mqtt_client_id() -> None:
    env = {v["name"]: v for v in api_container()["env"]}
    assert env["AVILA_MQTT_CLIENT_ID"]["value"] == "$(POD_NAME)"
    names = list(env)
    assert names.index("POD_NAME") < names.index("AVILA_MQTT_CLIENT_ID")  # expansion order
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def service_port(name: str, port_name: str) -> int:
    service = k8s_index()[("Service", name)]
    return next(int(p["port"]) for p in service["spec"]["ports"] if p["name"] == port_name)


def test_api_urls_point_at_the_services_as_configured() -> None:
    env = api_environment()
    index = k8s_index()
    storage = url(env["AVILA_STORAGE_URL"])
    assert storage.scheme == "clickhouse" and storage.hostname == "clickhouse"
    assert storage.port == service_port("clickhouse", "http")
    ch_env = {v["name"]: v for v in pod_containers(index[("StatefulSet", "clickhouse")])[0]["env"]}
    assert storage.username == ch_env["CLICKHOUSE_USER"]["value"]
    assert storage.path == "/" + ch_env["CLICKHOUSE_DB"]["value"]
    password_ref = ch_env["CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = index[("Secret", password_ref["name"])]["stringData"]
    assert storage.password == secret[password_ref["key"]]

    redis = url(env["AVILA_REDIS_URL"])
    assert (redis.hostname, redis.port) == ("redis", service_port("redis", "redis"))
    mqtt = url(env["AVILA_MQTT_URL"])
    assert (mqtt.hostname, mqtt.port) == ("mosquitto", service_port("mosquitto", "mqtt"))
    conf = index[("ConfigMap", "mosquitto-config")]["data"]["mosquitto.conf"]
    assert f"listener {mqtt.port} 0.0.0.0" in conf


def test_manifest_files_are_all_found() -> None:
    assert {p.name for p, _ in DOCS} == {p.name for p in K8S.glob("*.yaml")}
    kinds = {d["kind"] for _, d in DOCS}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    } <= kinds
