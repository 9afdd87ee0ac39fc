"""Write a benchmark's figures into its own section of benchmarks/RESULTS.md.

Each benchmark owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; running
it replaces that section (adding it at the end the first time) and leaves the others alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nWritten by the benchmarks themselves (`make bench`); each section says when and where it ran.\n"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def stamp() -> str:
    return f"_Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}._"


def write_section(name: str, body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    section = f"<!-- {name}:start -->\n{body.rstrip()}\n<!-- {name}:end -->"
    pattern = re.compile(
        rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.DOTALL
    )
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    RESULTS.write_text(text)


def add_env_option(parser: argparse.ArgumentParser) -> None:
    """``--env NAME=VALUE``, repeatable: a setting for the benchmark's server (or another
    tree's ``PYTHONPATH``, for A/B runs); read them with :func:`env_settings`."""
    parser.add_argument(
        "--env", action="append", default=[], help="extra server setting NAME=VALUE"
    )


def env_settings(args: argparse.Namespace) -> dict[str, str]:
    return dict(item.split("=", 1) for item in args.env)


def print_median(rounds: list[dict[str, float]], digits: int = 2) -> dict[str, float]:
    """Print and return the median of each figure over ``rounds``."""
    median = {k: statistics.median(f[k] for f in rounds) for k in rounds[0]}
    print("median: " + ", ".join(f"{k}={v:,.{digits}f}" for k, v in median.items()))
    return median
