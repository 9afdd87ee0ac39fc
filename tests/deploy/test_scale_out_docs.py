"""docs/scale-out.md agrees with the deploy files and the benchmark results it cites."""

from __future__ import annotations

import re
import shlex

from tests.deploy.deploy_files import (
    DEPLOY,
    ROOT,
    compose,
    k8s_index,
    unknown_settings,
    url,
)

DOC = ROOT / "docs" / "scale-out.md"
TEXT = DOC.read_text()
RESULTS = (ROOT / "benchmarks" / "RESULTS.md").read_text()


def bash_commands() -> list[str]:
    """Every command line of the page's bash blocks (continuations joined, comments dropped)."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", TEXT, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def capacity_rows() -> list[list[str]]:
    section = re.search(r"<!-- capacity:start.*?-->\n(.*?)<!-- capacity:end -->", TEXT, re.S)
    assert section, "the capacity table needs its markers"
    lines = [line for line in section.group(1).splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert rows
    return rows


def test_capacity_figures_are_quoted_from_results() -> None:
    rows = capacity_rows()
    assert rows
    for row in rows:
        figure, embedded, *others = row
        for cell in (embedded, *others):
            if cell == "n/m" and cell is not embedded:
                continue  # not measured on this machine (said under the table)
            assert re.fullmatch(r"[\d,]+(\.\d+)?", cell), f"{figure}: {cell!r} is not a figure"
            assert re.search(rf"(?<![\d,.]){re.escape(cell)}(?![\d])", RESULTS), (
                f"{figure}: {cell} is not in benchmarks/RESULTS.md"
            )


def test_kubectl_commands_name_existing_resources() -> None:
    index = k8s_index()
    namespaces = {name for kind, name in index if kind == "Namespace"}
    kinds = {"deployment": "Deployment", "hpa": "HorizontalPodAutoscaler"}
    kubectl = [shlex.split(c) for c in bash_commands() if c.startswith("kubectl")]
    inline = re.findall(r"`(kubectl [^`]+)`", TEXT)
    kubectl += [shlex.split(c) for c in inline]
    scale = [c for c in kubectl if "scale" in c and "deployment" in c]
    assert scale, "the page shows kubectl scale"
    for words in kubectl:
        if "-n" in words:
            assert words[words.index("-n") + 1] in namespaces, words
        for word, kind in kinds.items():
            if word in words:
                name = words[words.index(word) + 1]
                assert (kind, name) in index, words
                assert index[(kind, name)]["metadata"]["namespace"] == words[words.index("-n") + 1]
        if "-f" in words:
            assert (ROOT / words[words.index("-f") + 1]).exists(), words
    (command,) = scale
    deployment = index[("Deployment", "avila-analytics")]
    assert command == [
        "kubectl",
        "-n",
        deployment["metadata"]["namespace"],
        "scale",
        "deployment",
        deployment["metadata"]["name"],
        "--replicas=3",
    ]


def test_compose_commands_name_existing_files_and_services() -> None:
    services = compose()["services"]
    commands = [shlex.split(c) for c in bash_commands() if c.startswith("docker compose")]
    assert commands
    for words in commands:
        path = ROOT / words[words.index("-f") + 1]
        assert path.is_file(), words
        if path == DEPLOY / "docker-compose.yml" and "up" in words:
            named = [w for w in words[words.index("up") + 1 :] if not w.startswith("-")]
            assert set(named) <= set(services), named
            if "--profile" in words:
                profile = words[words.index("--profile") + 1]
                assert any(profile in s.get("profiles", []) for s in services.values())


def test_live_suite_command_matches_the_compose_clickhouse() -> None:
    services = compose()["services"]
    ch = services["clickhouse"]["environment"]
    live = [c for c in bash_commands() if c.startswith("CLICKHOUSE_URL=")]
    assert "CLICKHOUSE_URL=clickhouse://default:@localhost:8123/default make test" in live
    (from_compose,) = [c for c in live if "default:@" not in c]
    target = url(from_compose.split()[0].split("=", 1)[1])
    assert (target.username, target.password) == (ch["CLICKHOUSE_USER"], ch["CLICKHOUSE_PASSWORD"])
    assert target.path == "/" + ch["CLICKHOUSE_DB"]
    assert f"{target.port}:8123" in services["clickhouse"]["ports"]
    image = services["clickhouse"]["image"]
    assert f"`{image}`" in TEXT and any(image in c for c in bash_commands())


def test_settings_named_are_ours() -> None:
    names = set(re.findall(r"\b(AVILA_[A-Z0-9_]+|API_KEYS)\b", TEXT))
    assert {"AVILA_STORAGE_URL", "AVILA_REDIS_URL", "AVILA_CLICKHOUSE_CLUSTER"} <= names
    assert unknown_settings(names) == []


def test_relative_links_resolve() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", TEXT)
    assert "shared-state.md" in links
    for link in links:
        if link.startswith("http"):
            continue
        target = (DOC.parent / link).resolve()
        assert target.exists(), link


def test_operations_page_and_readme_point_here() -> None:
    assert "scale-out.md" in (ROOT / "docs" / "operations.md").read_text()
    assert "docs/scale-out.md" in (ROOT / "README.md").read_text()
