"""avila demo-factory: write a deterministic plant (telemetry) through the telemetry path."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from avila.config import Settings


def positive_int(text: str) -> int:
    """argparse ``type``: a whole number of at least 1 (users, days, lines, rows...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def end_argument(text: str) -> str:
    """argparse ``type``: an ISO 8601 date or date-time (checked, returned as given)."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a date YYYY-MM-DD or an ISO 8601 date-time, got {text!r}"
        ) from None
    return text


def parse_end(text: str | None) -> datetime | None:
    if not text:
        return None
    end = datetime.fromisoformat(text)
    return end if end.tzinfo else end.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    from avila.demo.factory import run_factory_demo

    settings = Settings.from_env()
    settings.ensure_directories()
    run_factory_demo(
        settings.storage_url,
        lines=args.lines,
        machines=args.machines,
        days=args.days,
        seed=args.seed,
        end=parse_end(args.end),
        project=args.project,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "demo-factory", help="write a deterministic Industry 4.0 plant (sensors, OEE, energy)"
    )
    parser.add_argument(
        "--lines", type=positive_int, default=2, help="production lines (default 2)"
    )
    parser.add_argument(
        "--machines", type=positive_int, default=3, help="machines per line (default 3)"
    )
    parser.add_argument("--days", type=positive_int, default=7, help="days of history (default 7)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--end",
        type=end_argument,
        help="end of the data, ISO 8601 (default: the current hour, UTC)",
    )
    parser.add_argument("--project", default="default", help="project to write into")
    parser.set_defaults(func=run)
