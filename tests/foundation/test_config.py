"""Settings: defaults, aliases, .env files, overrides, fail-fast validation, and the docs table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from avila.config import SETTINGS, Settings
from avila.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    s = Settings.from_env({}, env_file=None)
    assert (s.host, s.port, s.log_level) == ("0.0.0.0", 3000, "info")
    assert s.api_keys == () and s.rate_limit_per_minute == 1000 and s.enable_cors is False
    assert s.storage_url == "duckdb:///data/avila.duckdb"
    assert s.duckdb_path == Path("data/avila.duckdb")


def test_absolute_data_dir_gives_four_slash_url(tmp_path: Path) -> None:
    s = Settings.from_env({"AVILA_DATA_DIR": str(tmp_path)}, env_file=None)
    assert s.storage_url == f"duckdb:///{tmp_path}/avila.duckdb"
    assert s.duckdb_path == tmp_path / "avila.duckdb"


def test_rust_log_is_an_alias_and_log_level_wins() -> None:
    assert Settings.from_env({"RUST_LOG": "debug"}, env_file=None).log_level == "debug"
    assert (
        Settings.from_env({"RUST_LOG": "avila=warn,tower=info"}, env_file=None).log_level
        == "warning"
    )
    both = Settings.from_env({"RUST_LOG": "debug", "LOG_LEVEL": "error"}, env_file=None)
    assert both.log_level == "error"


def test_env_file_is_read_and_real_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nAPI_KEYS=a, b ,c\n# comment\nENABLE_CORS=true\n")
    s = Settings.from_env({"PORT": "5000"}, env_file=env_file)
    assert s.port == 5000 and s.api_keys == ("a", "b", "c") and s.enable_cors is True


def test_cli_overrides_win_over_environment() -> None:
    s = Settings.from_env(
        {"PORT": "5000", "HOST": "127.0.0.1"}, env_file=None, port=6000, host=None
    )
    assert s.port == 6000 and s.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("ENABLE_CORS", "maybe"),
        ("RATE_LIMIT_PER_MINUTE", "-1"),
        ("LOG_LEVEL", "loud"),
        ("RUST_LOG", "verbose"),
        ("AVILA_STORAGE_URL", "postgres://x"),
        ("AVILA_DEDUP_WINDOW_HOURS", "0"),
        ("AVILA_DUCKDB_MEMORY_LIMIT", "lots"),
        ("AVILA_DUCKDB_THREADS", "-1"),
        ("AVILA_QUERY_WORKERS", "many"),
        ("AVILA_MQTT_URL", "http://broker"),
        ("AVILA_REDIS_URL", "http://cache:6379"),
        ("AVILA_MQTT_SHARE_GROUP", "a/b"),
    ],
)
def test_invalid_values_fail_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value}, env_file=None)
    variable = "AVILA_STORAGE_URL" if name == "AVILA_STORAGE_URL" else name
    assert variable in info.value.message


def test_docs_configuration_table_matches_settings() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", text, flags=re.MULTILINE))
    declared = {spec.env for spec in SETTINGS}
    assert declared <= documented, f"undocumented: {sorted(declared - documented)}"
    for spec in SETTINGS:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{spec.env}` |"))
        assert f"`{spec.default}`" in row or (spec.default == "" and "(empty)" in row), row


def test_env_example_only_names_known_settings() -> None:
    known = {spec.env for spec in SETTINGS} | {a for spec in SETTINGS for a in spec.aliases}
    names = re.findall(
        r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE
    )
    assert names and set(names) <= known


def test_duckdb_memory_limit_reaches_duckdb_in_the_store_process(tmp_path: Path) -> None:
    from avila.storage.duckdb.process import ProcessStore

    store = ProcessStore(tmp_path / "limited.duckdb", memory_limit="123MB")
    try:
        assert store.query("SELECT current_setting('memory_limit')")[0][0] == "117.3 MiB"
    finally:
        store.close()


def test_duckdb_threads_reach_duckdb_in_the_store_process(tmp_path: Path) -> None:
    from avila.storage import open_store

    settings = Settings.from_env({"AVILA_DUCKDB_THREADS": "1"}, env_file=None)
    assert settings.duckdb_threads == 1
    assert Settings.from_env({}, env_file=None).duckdb_threads == 0  # 0: one per core
    url = f"duckdb:///{tmp_path / 'threads.duckdb'}"
    store = open_store(url, in_process=False, threads=settings.duckdb_threads or None)
    try:
        assert store.query("SELECT current_setting('threads')")[0][0] == 1
    finally:
        store.close()
