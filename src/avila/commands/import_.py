"""avila import FILE: load events from NDJSON, CSV or Parquet through the ingestion path.

Every row is validated and deduplicated exactly like ``POST /api/v1/events/batch``; rejected
rows are listed at the end (row/line number, code, message) and make the exit status 1.

DuckDB admits one process per database file, so there are two modes:

- ``--url http://host:3000`` (with ``--api-key`` or ``AVILA_API_KEY``, ``ingest`` scope): send
  the events to a running server in batches; the key's project receives them.
- no ``--url``: open the store named by the settings in this process; only works while no
  server holds it. ``--project`` picks the project.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from avila.errors import AvilaError

if TYPE_CHECKING:
    from avila.export.importer import ImportSummary

SHOWN_REJECTIONS = 20
HTTP_BATCH_ROWS = 2000


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from avila.export.importer import HttpTarget, run_import
    from avila.export.reader import detect_format, progress_total, read_chunks

    path = Path(args.file)
    if not path.is_file():
        raise AvilaError(f"no such file: {path}", code="file_not_found")
    fmt = detect_format(path, args.format)
    key = args.api_key or os.environ.get("AVILA_API_KEY")
    if args.url and not key:
        raise AvilaError(
            "--url needs an API key with the ingest scope (--api-key or AVILA_API_KEY)"
        )
    by_rows = fmt == "parquet"
    with tqdm(
        total=progress_total(path, fmt),
        unit="rows" if by_rows else "B",
        unit_scale=not by_rows,
        unit_divisor=1024,
        desc=f"import {path.name}",
        disable=args.quiet or None,
        file=sys.stderr,
    ) as bar:

        def advance(progress: int, rows: int | None = None) -> None:
            if rows is not None and not by_rows:  # a bar in bytes: rows/s beside it
                elapsed = bar.format_dict["elapsed"]
                rate = f", {rows / elapsed:,.0f} rows/s" if elapsed else ""
                bar.set_postfix_str(f"{rows:,} rows{rate}", refresh=False)
            bar.update(progress - bar.n)

        summary: ImportSummary
        if args.url:
            summary = run_import(
                read_chunks(path, fmt, args.batch_size or HTTP_BATCH_ROWS),
                HttpTarget(args.url, str(key)),
                lambda chunk: advance(chunk.progress),
            )
        else:
            summary = _bulk(path, fmt, args, advance)
    print(
        f"{summary.rows} rows: {summary.accepted} accepted, {summary.duplicates} duplicates, "
        f"{summary.rejected} rejected",
        file=sys.stderr,
    )
    for r in summary.rejections[:SHOWN_REJECTIONS]:
        where = f" at {r.path}" if r.path else ""
        print(f"  row {r.row}: {r.code}: {r.message}{where}", file=sys.stderr)
    if summary.rejected > SHOWN_REJECTIONS:
        print(f"  ... and {summary.rejected - SHOWN_REJECTIONS} more", file=sys.stderr)
    return 1 if summary.rejected else 0


def _bulk(
    path: Path, fmt: str, args: argparse.Namespace, advance: Callable[..., None]
) -> ImportSummary:
    """Straight into the local store, validated by column, in one transaction."""
    from avila.commands.export import open_local_store
    from avila.config import Settings
    from avila.export.bulk import BULK_BATCH_ROWS, bulk_import
    from avila.storage.ingest_log import config_from_settings

    settings = Settings.from_env()
    store = open_local_store(settings.storage_url, read_only=False)
    try:
        # The server's ingest log: its unloaded backlog is loaded before the import.
        store.ingest_log_config = config_from_settings(settings)
        if not hasattr(store, "bulk_transaction"):
            # Stores without a bulk path (ClickHouse): every row through the ingest service.
            from avila.export.importer import DirectTarget, run_import
            from avila.export.reader import read_chunks

            return run_import(
                read_chunks(path, fmt, args.batch_size or HTTP_BATCH_ROWS),
                DirectTarget(store, args.project),
                lambda chunk: advance(chunk.progress),
            )
        return bulk_import(
            path,
            fmt,
            store,
            args.project,
            dedup_window_hours=settings.dedup_window_hours,
            batch_rows=args.batch_size or BULK_BATCH_ROWS,
            on_batch=advance,
        )
    finally:
        store.close()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "import",
        help="import events from ndjson, csv or parquet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="file to import (.ndjson/.jsonl, .csv, .parquet)")
    parser.add_argument("-f", "--format", choices=["ndjson", "csv", "parquet"])
    parser.add_argument("--project", default="default", help="project (direct mode only)")
    parser.add_argument("--url", help="send to a running server at this base URL")
    parser.add_argument("--api-key", help="key for --url (default: $AVILA_API_KEY)")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="rows per batch (default: 122880 direct; 2000 with --url)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
