"""avila demo: write a deterministic e-commerce demo dataset through the ingestion path."""

from __future__ import annotations

import argparse

from avila.commands.factory import end_argument, positive_int
from avila.config import Settings


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    settings.ensure_directories()
    if args.factory:
        from avila.commands.factory import parse_end
        from avila.demo.factory import run_factory_demo

        # The factory demo never doubles data: with devices present it does nothing.
        run_factory_demo(
            settings.storage_url,
            lines=2,
            machines=3,
            days=args.days,
            seed=args.seed,
            end=parse_end(args.end),
            project=args.project,
        )
        return 0

    from avila.demo.ecommerce import run_demo

    return run_demo(
        settings,
        users=args.users,
        days=args.days,
        seed=args.seed,
        end=args.end,
        project=args.project,
        if_empty=args.if_empty,
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = sub.add_parser("demo", help="write a deterministic e-commerce demo dataset")
    demo.add_argument(
        "--users", type=positive_int, default=500, help="number of users (default 500)"
    )
    demo.add_argument("--days", type=positive_int, default=30, help="days of history (default 30)")
    demo.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    demo.add_argument(
        "--end", type=end_argument, help="last day of data, YYYY-MM-DD (default: today, UTC)"
    )
    demo.add_argument("--project", default="default", help="project to write into")
    demo.add_argument(
        "--if-empty", action="store_true", help="do nothing when the store already has events"
    )
    demo.add_argument(
        "--factory",
        action="store_true",
        help="write an Industry 4.0 plant instead (telemetry; `avila demo-factory` has more options)",
    )
    demo.set_defaults(func=run)
