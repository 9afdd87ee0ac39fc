"""avila demo-factory: write a deterministic plant (telemetry) through the telemetry path."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from avila.config import Settings


def parse_end(text: str | None) -> datetime | None:
    if not text:
        return None
    end = datetime.fromisoformat(text)
    return end if end.tzinfo else end.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    from avila.demo.factory import run_factory_demo

    settings = Settings.from_env()
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
    parser.add_argument("--lines", type=int, default=2, help="production lines (default 2)")
    parser.add_argument("--machines", type=int, default=3, help="machines per line (default 3)")
    parser.add_argument("--days", type=int, default=7, help="days of history (default 7)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--end", help="end of the data, ISO 8601 (default: the current hour, UTC)")
    parser.add_argument("--project", default="default", help="project to write into")
    parser.set_defaults(func=run)
