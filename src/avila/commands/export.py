"""avila export: write the events of a project to a file (or stdout) as CSV, JSON, NDJSON or
Parquet.

DuckDB admits one process per database file, so there are two modes:

- ``--url http://host:3000`` (with ``--api-key`` or ``AVILA_API_KEY``): ask a running server
  (``POST /api/v1/export``); the key's project is exported.
- no ``--url``: open the store named by the settings directly; only works while no server
  holds it (the error says so). ``--project`` picks the project.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import msgspec

from avila.errors import AvilaError, StorageUnavailable

if TYPE_CHECKING:
    from avila.export.query import ExportRequest

#: The ``--format`` choices, the keys of :data:`avila.export.writers.FORMATS` (a test holds them
#: equal). Written out so building the command line does not import the export machinery
#: (pyarrow, the analytics package): every ``avila`` command builds the whole parser.
FORMAT_NAMES = ("csv", "json", "ndjson", "parquet")

_EXT_FORMATS = {
    ".csv": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
}


def open_local_store(storage_url: str, *, read_only: bool) -> Any:
    """The store in this process, or a StorageUnavailable that suggests ``--url``."""
    from avila.storage import open_store

    try:
        return open_store(storage_url, read_only=read_only, lock_wait=1.0)
    except StorageUnavailable as exc:
        raise StorageUnavailable(
            f"{exc.message}\nIs `avila serve` running on this store? A DuckDB file or chdb"
            " directory admits one process: pass --url http://HOST:PORT (and --api-key) to go"
            " through the server."
        ) from None


def _request(args: argparse.Namespace) -> ExportRequest:
    from avila.export.query import parse_request

    filters: dict[str, Any] = {}
    if args.user_id:
        filters["user_ids"] = args.user_id
    if args.event_type:
        filters["event_types"] = args.event_type
    if args.start_time:
        filters["start_time"] = args.start_time
    if args.end_time:
        filters["end_time"] = args.end_time
    if args.property:
        props: dict[str, Any] = {}
        for item in args.property:
            path, sep, value = item.partition("=")
            if not sep:
                raise AvilaError(f"--property needs PATH=VALUE, got {item!r}", code="bad_argument")
            props.setdefault(path, []).append(value)
        filters["properties"] = {k: v[0] if len(v) == 1 else v for k, v in props.items()}
    return parse_request(msgspec.json.encode({"format": args.format, "filters": filters}))


def _via_server(args: argparse.Namespace, request: ExportRequest, out: BinaryIO) -> None:
    key = args.api_key or os.environ.get("AVILA_API_KEY")
    if not key:
        raise AvilaError("--url needs an API key with the read scope (--api-key or AVILA_API_KEY)")
    req = urllib.request.Request(
        args.url.rstrip("/") + "/api/v1/export",
        data=msgspec.json.encode(request),
        method="POST",
        headers={"content-type": "application/json", "x-api-key": key},
    )
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        raise AvilaError(
            f"server answered {exc.code}: {exc.read().decode(errors='replace')[:500]}"
        ) from None
    except OSError as exc:
        raise StorageUnavailable(f"cannot reach {args.url}: {exc}") from None


def _direct(args: argparse.Namespace, request: ExportRequest, out: BinaryIO) -> int:
    from avila.config import Settings
    from avila.export.stream import open_export, tune_for_one_export

    store = open_local_store(Settings.from_env().storage_url, read_only=True)
    try:
        tune_for_one_export(store)
        stream = open_export(store, args.project, request)
        try:
            for chunk in stream:
                out.write(chunk)
        finally:
            stream.close()
        return stream.rows
    finally:
        store.close()


def run(args: argparse.Namespace) -> int:
    if args.format is None:
        suffix = Path(args.output).suffix.lower() if args.output not in (None, "-") else ""
        args.format = _EXT_FORMATS.get(suffix, "ndjson")
    request = _request(args)
    with ExitStack() as stack:
        to_stdout = args.output in (None, "-")
        target = Path(args.output) if not to_stdout else None
        partial = target.with_name(target.name + ".part") if target else None
        out: BinaryIO = (
            sys.stdout.buffer if partial is None else stack.enter_context(open(partial, "wb"))
        )
        try:
            if args.url:
                _via_server(args, request, out)
                rows = None
            else:
                rows = _direct(args, request, out)
            out.flush()
        except BaseException:
            if partial is not None:
                stack.close()
                partial.unlink(missing_ok=True)
            raise
    if target is not None and partial is not None:
        partial.replace(target)
        from avila.export.writers import FORMATS

        counted = f"{rows} events " if rows is not None else ""
        print(f"exported {counted}to {target} ({FORMATS[args.format].name})", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "export",
        help="export events as csv, json, ndjson or parquet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", help="file to write (default: stdout)")
    parser.add_argument(
        "-f",
        "--format",
        choices=FORMAT_NAMES,
        help="default: from the file extension, else ndjson",
    )
    parser.add_argument("--user-id", action="append", help="only this user (repeatable)")
    parser.add_argument("--event-type", action="append", help="only this type (repeatable)")
    parser.add_argument("--start-time", help="RFC 3339; events at or after it")
    parser.add_argument("--end-time", help="RFC 3339; events before it")
    parser.add_argument(
        "--property",
        action="append",
        metavar="PATH=VALUE",
        help="property equality filter, e.g. context.device.browser=Chrome (repeatable)",
    )
    parser.add_argument("--project", default="default", help="project (direct mode only)")
    parser.add_argument("--url", help="export through a running server at this base URL")
    parser.add_argument("--api-key", help="key for --url (default: $AVILA_API_KEY)")
    parser.add_argument("--timeout", type=float, default=300, help="--url socket timeout (s)")
    parser.set_defaults(func=run)
