"""Reading the deploy files as their tools would: compose interpolation, Kubernetes documents,
and the settings they may name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import yaml

from avila.config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"

SETTING_NAMES = frozenset(
    name for spec in SETTINGS for name in (spec.env, *spec.aliases)
)  # fmt: skip

# The third-party images' own variables (not ours), and the Downward API helper.
FOREIGN_ENV = frozenset(
    {
        "CLICKHOUSE_DB",
        "CLICKHOUSE_USER",
        "CLICKHOUSE_PASSWORD",
        "CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT",
        "GF_SECURITY_ADMIN_PASSWORD",
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
        "POD_NAME",
    }
)


def unknown_settings(names: set[str]) -> list[str]:
    """Names that are not our settings (nor another program's environment)."""
    return sorted(n for n in names if n not in SETTING_NAMES | FOREIGN_ENV)


_DEFAULTED = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*):?-(?P<default>[^}]*)\}")
_BARE = re.compile(r"(?<!\$)\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str) -> str:
    """Compose interpolation with an empty environment: ``${X:-d}`` -> d, ``$$`` -> ``$``.

    A bare ``$X``/``${X}`` would make ``docker compose up`` depend on the caller's shell: refused.
    """
    text = _DEFAULTED.sub(lambda m: m.group("default"), text)
    bare = _BARE.findall(text)
    if bare:
        raise AssertionError(f"variables without a default in the compose file: {bare}")
    return text.replace("$$", "$")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text()))
    return data


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every document of every manifest, in the order ``kubectl apply -f deploy/k8s/`` takes."""
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def k8s_index() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in k8s_documents()}


def url(raw: str) -> SplitResult:
    parts = urlsplit(raw)
    assert parts.hostname and parts.port, f"{raw!r} needs an explicit host and port"
    return parts
