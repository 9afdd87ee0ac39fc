"""Reading the deploy files as their tools would: compose interpolation, Kubernetes documents,
and the settings they may name.

Settings still being built on sibling branches of issue 10 are listed in :data:`PENDING`, each
group with the sign that its branch has been merged. ``test_pending_settings_are_settled``
fails once a group has arrived, so the list cannot outlive the merge.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import yaml

from avila.config import SETTINGS, Settings
from avila.errors import ConfigError

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


def clickhouse_urls_accepted() -> bool:
    """i10-store merged: Settings takes the live suite's ClickHouse URL."""
    try:
        Settings.from_env(
            {"AVILA_STORAGE_URL": "clickhouse://default:@localhost:8123/default"}, env_file=None
        )
    except ConfigError:
        return False
    return True


@dataclass(frozen=True)
class PendingGroup:
    branch: str
    names: frozenset[str]
    merged: Callable[[], bool]
    merged_sign: str


PENDING: tuple[PendingGroup, ...] = (
    PendingGroup(
        "i10-replicas",
        frozenset({"AVILA_REDIS_URL", "AVILA_MQTT_SHARE_GROUP"}),
        lambda: (ROOT / "docs" / "shared-state.md").exists(),
        "docs/shared-state.md exists",
    ),
    PendingGroup(
        "i10-store",
        frozenset(
            {
                "AVILA_CLICKHOUSE_CLUSTER",
                "AVILA_CLICKHOUSE_INSERT_QUORUM",
                "AVILA_CLICKHOUSE_TTL_DAYS",
            }
        ),
        clickhouse_urls_accepted,
        "Settings accepts clickhouse:// URLs",
    ),
)
PENDING_NAMES = frozenset(name for group in PENDING for name in group.names)
PENDING_DOCS = {"docs/shared-state.md": "i10-replicas"}


def unknown_settings(names: set[str]) -> list[str]:
    """Names that are neither settings nor pending settings of a sibling branch."""
    return sorted(n for n in names if n not in SETTING_NAMES | PENDING_NAMES | FOREIGN_ENV)


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
