"""The server starts without the numerical libraries only some requests need.

SciPy, scikit-learn and river cost ~3 CPU-seconds of every ``avila serve`` start (and of every
CLI command) when imported with the app; they are imported where a model is fitted or a test
statistic computed. ``Z_95`` replaces SciPy's quantile at import: it must be that quantile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scipy.stats import norm

from avila.experiments.statistics import Z_95

#: httpx is the alert deliverer's, made at the first webhook (~0.3 CPU-s of every start); pandas
#: loads with the first model fit or training read (~0.4 CPU-s); the Redis client only where
#: ``AVILA_REDIS_URL`` is set (~0.15 CPU-s).
HEAVY = ("scipy", "sklearn", "river", "httpx", "pandas", "redis")


def test_importing_the_app_leaves_the_libraries_few_requests_need_unimported() -> None:
    probe = (
        "import sys, avila.app, avila.cli;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def test_z95_is_scipys_two_sided_95_percent_quantile_to_the_last_bit() -> None:
    assert float(norm.isf(0.025)) == Z_95


def test_building_the_command_line_imports_no_data_library() -> None:
    """Every ``avila`` command builds the whole parser; ``avila keys`` or ``avila demo`` must not
    pay for the export machinery, the analytics package or the Redis client to do so."""
    probe = (
        "import sys, avila.cli; avila.cli.build_parser();"
        "print(','.join(m for m in ('pyarrow', 'pandas', 'duckdb', 'redis', 'avila.analytics')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def test_the_export_commands_format_choices_are_the_writers_formats() -> None:
    from avila.commands.export import FORMAT_NAMES
    from avila.export.writers import FORMATS

    assert tuple(sorted(FORMATS)) == FORMAT_NAMES


def test_the_app_is_built_without_the_pydantic_and_attrs_plugins(tmp_path: Path) -> None:
    """No route takes a pydantic or attrs model, yet Litestar loads plugins for both whenever
    the libraries are installed (test and docs tools bring them): ~0.5 CPU-s of every start, and
    a test server unlike a production one."""
    probe = (
        "import sys; from avila.app import create_app; from avila.config import Settings;"
        "s = Settings.from_env(); s.ensure_directories(); create_app(s);"
        "print(','.join(m for m in ('pydantic', 'attrs') if m in sys.modules))"
    )
    env = {**os.environ, "AVILA_DATA_DIR": str(tmp_path), "API_KEYS": "probe-key"}
    env.pop("AVILA_STORAGE_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == "", out.stderr[-2000:]
