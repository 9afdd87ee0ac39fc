"""The command line and settings at their edges: a bad flag, value or path stops a command at
once with one line on stderr naming what is wrong (status 2), never a traceback, a silent
fallback or a server on another port than the one asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from avila.config import Settings
from avila.errors import ConfigError
from avila.testing import ServerProcess, free_port


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVILA_")}
    for name in ("PORT", "HOST", "API_KEYS", "LOG_LEVEL", "RUST_LOG"):
        env.pop(name, None)
    return {**env, "AVILA_DATA_DIR": str(data_dir), **extra}


def _avila(
    tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:  # pragma: no cover - helper
    """Run the real CLI in ``tmp_path`` (no stray .env); a command that wrongly starts a server
    is stopped by the timeout (a safety net, not a measurement)."""
    return subprocess.run(
        [sys.executable, "-m", "avila.cli", *args],
        env=_env(Path(env.pop("AVILA_DATA_DIR", str(tmp_path / "data"))), **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("avila"), last
    for needle in needles:
        assert needle in last, last


# --- avila serve flags are held to the rules of the settings they override --------------------


@pytest.mark.parametrize("port", ["99999", "0", "65536", "-1"])
def test_serve_refuses_a_port_flag_out_of_range(tmp_path: Path, port: str) -> None:
    # Before: --port 99999 started a server on port 34463 (99999 mod 65536), --port 0 on a
    # random port; neither was the port asked for, and nothing said so.
    result = _avila(tmp_path, "serve", "--host", "127.0.0.1", "--port", port)
    _assert_clean_failure(result, "--port", "1 and 65535")


def test_serve_refuses_an_mqtt_flag_that_is_not_an_mqtt_url(tmp_path: Path) -> None:
    # Before: --mqtt skipped AVILA_MQTT_URL's check; the bridge raised during startup
    # (exception-group traceback in the log, exit status 3).
    result = _avila(
        tmp_path, "serve", "--host", "127.0.0.1", "--port", str(free_port()), "--mqtt", "http://x"
    )
    _assert_clean_failure(result, "--mqtt", "mqtt://")


def test_overrides_are_checked_like_the_variables_they_override() -> None:
    with pytest.raises(ConfigError, match="PORT must be between 1 and 65535"):
        Settings.from_env({}, env_file=None, port=99999)
    with pytest.raises(ConfigError, match="AVILA_MQTT_URL"):
        Settings.from_env({}, env_file=None, mqtt_url="http://broker")
    ok = Settings.from_env({"PORT": "5000"}, env_file=None, port=6000, host=None)
    assert ok.port == 6000 and ok.host == "0.0.0.0"


# --- MQTT URL typos must not silently mean localhost (AVILA_REDIS_URL: avila.shared) -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AVILA_MQTT_URL", "mqtt:/broker"),  # one slash: no host, was read as localhost:1883
        ("AVILA_MQTT_URL", "mqtt://"),
        ("AVILA_MQTT_URL", "mqtt://broker:18x3"),
        ("AVILA_MQTT_URL", "mqtt://broker:99999"),
    ],
)
def test_a_url_without_a_usable_host_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value}, env_file=None)
    assert name in info.value.message


@pytest.mark.parametrize("url", ["mqtts://broker:8883", "ssl://broker", "mqtt://u:p@broker"])
def test_mqtt_urls_the_bridge_speaks_are_accepted(url: str) -> None:
    # The bridge connects over TLS for mqtts:// and ssl://; the setting refused both.
    assert Settings.from_env({"AVILA_MQTT_URL": url}, env_file=None).mqtt_url == url


# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0GB", "1MB", "0.001GB", "500KB", "1B"])
def test_a_duckdb_memory_limit_too_small_to_open_the_store_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="AVILA_DUCKDB_MEMORY_LIMIT must be at least 16MB"):
        Settings.from_env({"AVILA_DUCKDB_MEMORY_LIMIT": value}, env_file=None)


@pytest.mark.parametrize("value", ["16MB", "4GB", "50%", ""])
def test_usable_duckdb_memory_limits_are_kept(value: str) -> None:
    settings = Settings.from_env({"AVILA_DUCKDB_MEMORY_LIMIT": value}, env_file=None)
    assert settings.duckdb_memory_limit == value


def test_serve_with_a_zero_memory_limit_fails_with_one_line(tmp_path: Path) -> None:
    # Before: the store process hit DuckDB's OutOfMemoryException; the server printed its
    # traceback and exited with status 1.
    data = tmp_path / "data"
    seeded = _avila(tmp_path, "demo", "--users", "3", "--days", "2", "--end", "2026-03-01")
    assert seeded.returncode == 0, seeded.stderr
    result = _avila(
        tmp_path,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        AVILA_DATA_DIR=str(data),
        AVILA_DUCKDB_MEMORY_LIMIT="0GB",
    )
    _assert_clean_failure(result, "AVILA_DUCKDB_MEMORY_LIMIT")


@pytest.mark.parametrize("value", ["0GB", "0MB", "0.0KB"])
def test_a_zero_ingest_backlog_size_is_refused(value: str) -> None:
    # Before: "0GB" became a 1-byte backlog limit, so ingest answered 503 all the time.
    with pytest.raises(ConfigError, match="AVILA_INGEST_BACKLOG_MAX_BYTES"):
        Settings.from_env({"AVILA_INGEST_BACKLOG_MAX_BYTES": value}, env_file=None)
    ok = Settings.from_env({"AVILA_INGEST_BACKLOG_MAX_BYTES": "1KB"}, env_file=None)
    assert ok.ingest_backlog_max_bytes == 1024


# --- command arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["demo", "--end", "garbage"], "--end"),  # was a ValueError traceback, status 1
        (["demo-factory", "--end", "garbage"], "--end"),  # likewise
        (["demo", "--users", "0"], "--users"),  # was status 0 with "0 events stored"
        (["demo", "--users", "-5"], "--users"),
        (["demo", "--days", "0"], "--days"),
        (["demo-factory", "--lines", "0"], "--lines"),
        (["demo-factory", "--machines", "-1"], "--machines"),
        (
            ["migrate-store", "--from", "duckdb:///a.duckdb", "--to", "duckdb:///b.duckdb"]
            + ["--batch-rows", "0"],
            "--batch-rows",
        ),  # was a RuntimeError traceback from DuckDB's batch reader
    ],
)
def test_bad_command_arguments_are_usage_errors(tmp_path: Path, args: list[str], flag: str) -> None:
    result = _avila(tmp_path, *args)
    _assert_clean_failure(result, flag)
    assert not (tmp_path / "data" / "avila.duckdb").exists(), "a refused command wrote data"


# --- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["keys", "list"], ["demo", "--users", "3", "--days", "1"], ["serve"]]
)
def test_a_data_dir_that_is_a_file_is_named(tmp_path: Path, args: list[str]) -> None:
    # Before: `keys list` and `demo` printed a FileExistsError traceback (status 1); `serve`
    # said "store error (FileExistsError)" without naming the setting.
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("a file, not a directory\n")
    if args == ["serve"]:
        args = ["serve", "--host", "127.0.0.1", "--port", str(free_port())]
    result = _avila(tmp_path, *args, AVILA_DATA_DIR=str(not_a_dir))
    _assert_clean_failure(result, "AVILA_DATA_DIR", str(not_a_dir))


def test_an_ingest_log_dir_that_is_a_file_stops_serve_with_one_line(tmp_path: Path) -> None:
    # Before: the server started, then failed in its lifespan with an exception-group
    # traceback in the log and exit status 3.
    not_a_dir = tmp_path / "log"
    not_a_dir.write_text("")
    result = _avila(
        tmp_path,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        AVILA_INGEST_LOG_DIR=str(not_a_dir),
    )
    _assert_clean_failure(result, "AVILA_INGEST_LOG_DIR")


def test_a_data_dir_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    result = _avila(tmp_path, "keys", "list", AVILA_DATA_DIR="/proc/avila-cannot-be-here")
    _assert_clean_failure(result, "AVILA_DATA_DIR")


def test_a_storage_url_naming_no_file_is_refused(tmp_path: Path) -> None:
    # Before: "duckdb:///" opened "." and failed with "cannot open DuckDB file ." and a hint
    # about another process holding it.
    with pytest.raises(ConfigError, match="AVILA_STORAGE_URL must name the DuckDB file"):
        Settings.from_env({"AVILA_STORAGE_URL": "duckdb:///"}, env_file=None)
    directory = tmp_path / "store.duckdb"
    directory.mkdir()
    settings = Settings.from_env(
        {"AVILA_STORAGE_URL": f"duckdb:///{directory}", "AVILA_DATA_DIR": str(tmp_path)},
        env_file=None,
    )
    with pytest.raises(ConfigError, match="AVILA_STORAGE_URL must name the DuckDB file"):
        settings.ensure_directories()


def test_an_unreadable_keys_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # Before: sqlite3.DatabaseError traceback, status 1.
    data = tmp_path / "data"
    data.mkdir()
    (data / "keys.sqlite").write_text("not a database\n" * 100)
    result = _avila(tmp_path, "keys", "list", AVILA_DATA_DIR=str(data))
    _assert_clean_failure(result, "not a database")


def test_serve_creates_missing_nested_directories_and_serves(tmp_path: Path) -> None:
    """The checks create what they can: a fresh nested ingest-log directory is made, and the
    server answers on exactly the port it was given."""
    log_dir = tmp_path / "fast" / "disk" / "ingest-log"
    proc = ServerProcess(
        tmp_path / "data", env={**_env(tmp_path / "data"), "AVILA_INGEST_LOG_DIR": str(log_dir)}
    )
    with proc:
        assert httpx.get(proc.url + "/health", timeout=30).status_code == 200
    assert log_dir.is_dir()
