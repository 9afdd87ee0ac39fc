"""Command line: ``avila <command>``. Each command lives in ``avila.commands.<name>``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from avila import __version__
from avila.errors import AvilaError

#: Command modules under ``avila.commands``, in help order. Imported when the parser is built,
#: so :func:`main` can set process-wide options before pyarrow and DuckDB load.
COMMAND_MODULES: tuple[str, ...] = (
    "serve",
    "demo",
    "keys",
    "export",
    "import_",
    "factory",
    "train",
    "migrate_store",
    "quarantine",
)

#: Arrow allocator for the one-shot data commands. They stream large exports/imports, and
#: Arrow's default (mimalloc) keeps freed pages around: a 10M-row Parquet export peaked at
#: 227 MB RSS with it, 206 MB with the system allocator. Arrow fixes its pool when it first
#: allocates, hence before the commands are imported.
ONE_SHOT_ARROW_POOL = "system"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avila", description="Avila Analytics server and tools")
    parser.add_argument("--version", action="version", version=f"avila {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"avila.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] in (["export"], ["import"], ["migrate-store"]):
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", ONE_SHOT_ARROW_POOL)
    args = build_parser().parse_args(arguments)
    try:
        return int(args.func(args))
    except AvilaError as exc:
        print(f"avila: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The machine, not the program, is at fault (a file that cannot be opened or is not what
        # it should be, a database error): one line on stderr and status 2, like AvilaError.
        # Anything else is a bug and keeps its traceback.
        if not isinstance(exc, _environment_errors()):
            raise
        print(f"avila: {_describe(exc)}", file=sys.stderr)
        return 2


def _environment_errors() -> tuple[type[BaseException], ...]:
    """OSError, and the database / Arrow errors of the libraries a command has loaded."""
    found: list[type[BaseException]] = [OSError]
    for module, name in (("sqlite3", "Error"), ("duckdb", "Error"), ("pyarrow", "ArrowException")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(getattr(loaded, name, None), type):
            found.append(getattr(loaded, name))
    return tuple(found)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename is not None else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
