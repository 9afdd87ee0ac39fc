"""Command line: ``avila <command>``. Each command lives in ``avila.commands.<name>``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from avila import __version__
from avila.commands import demo, export, import_, keys, serve, train
from avila.commands import factory as demo_factory
from avila.errors import AvilaError

COMMAND_MODULES: tuple[ModuleType, ...] = (serve, demo, keys, export, import_, demo_factory, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avila", description="Avila Analytics server and tools")
    parser.add_argument("--version", action="version", version=f"avila {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AvilaError as exc:
        print(f"avila: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
