"""avila quarantine list | requeue: the ingest-log entries the loader set aside.

An entry the store refused every time it was loaded is kept, byte for byte, in the ingest log's
``quarantine/`` directory instead of stopping all loading (docs/ingestion.md, "An entry the store
refuses"). ``list`` shows them (also while the server runs). ``requeue`` appends them to the
ingest log again, after the cause is fixed (an upgrade that reads a newer entry kind, space for
a store that failed), waits until the log is loaded and says, per entry, whether it loaded or
was set aside again; the old file is removed once its copy is durable in the log.

``requeue`` opens the store itself: stop ``avila serve`` first (a DuckDB file or chdb directory
admits one process). A crash between the copy's append and the removal of the old file leaves
the file: requeueing it again would load its events twice.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from avila.errors import AvilaError

KINDS = {1: "events", 2: "telemetry"}


class NothingToRequeue(AvilaError):
    status_code = 404
    code = "not_found"


def _describe(entry: dict[str, Any]) -> str:
    from avila.storage import frames

    payload: bytes = entry["payload"]
    kind = KINDS.get(entry["kind"], f"unknown kind {entry['kind']}")
    rows = ""
    if entry["kind"] == frames.EVENTS:
        try:
            rows = f", {sum(1 for _ in frames.event_keys(payload))} events"
        except Exception:
            rows = ", unreadable"
    return (
        f"{entry['start']:>14}  {entry['quarantined_at']}  {kind}{rows}, {len(payload):,} bytes"
        f"\n{'':>14}  {entry['error']}"
    )


def _log_directory() -> Path:
    from avila.config import Settings
    from avila.storage.ingest_log import config_from_settings

    return config_from_settings(Settings.from_env()).directory


def run_list(args: argparse.Namespace) -> int:
    from avila.storage import quarantine

    found = quarantine.entries(_log_directory())
    if not found:
        print("no entries set aside")
        return 0
    print(f"{len(found)} entries set aside (log position, when, what, error):")
    for entry in found:
        print(_describe(entry))
    return 0


def run_requeue(args: argparse.Namespace) -> int:
    from avila.commands.export import open_local_store
    from avila.config import Settings
    from avila.storage import quarantine
    from avila.storage.ingest_log import config_from_settings

    settings = Settings.from_env()
    config = config_from_settings(settings)
    chosen = [
        e
        for e in quarantine.entries(config.directory)
        if not args.start or e["start"] in args.start
    ]
    if not chosen:
        raise NothingToRequeue(
            "no entries set aside" + (" at those positions" if args.start else "")
        )
    store = open_local_store(settings.storage_url, read_only=False)
    try:
        store.ingest_log_config = config
        ingest_log = store.open_ingest_log()
        progress = store.load_progress
        # the backlog first: what is set aside again below is then among the requeued
        progress.wait_loaded(progress.durable, args.timeout)
        before = {int(e["start"]) for e in quarantine.entries(config.directory)}
        copies = asyncio.run(_append(ingest_log, chosen, config.directory))
        if not progress.wait_loaded(progress.durable, args.timeout):
            print(f"the log is not loaded after {args.timeout} s; it goes on at the next start")
            return 1
        again = {int(e["start"]): e for e in quarantine.entries(config.directory)}
        failed = 0
        for entry, (start, _end) in zip(chosen, copies, strict=True):
            if start in again and start not in before:
                failed += 1
                print(f"{entry['start']}: set aside again at {start}: {again[start]['error']}")
            else:
                print(f"{entry['start']}: loaded (log position {start})")
    finally:
        store.close()
    print(f"{len(chosen) - failed} of {len(chosen)} entries loaded")
    return 1 if failed else 0


async def _append(
    ingest_log: Any, chosen: list[dict[str, Any]], directory: Path
) -> list[tuple[int, int]]:
    """Append each entry again; remove its old file once the copy is durable."""
    from avila.storage import quarantine
    from avila.storage.ingest_log import HEADER

    copies = []
    for entry in chosen:
        payload: bytes = entry["payload"]
        end = await ingest_log.append(payload, 0)
        copies.append((end - HEADER.size - len(payload), end))
        quarantine.remove(directory, int(entry["start"]))
    return copies


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "quarantine",
        help="list or requeue ingest-log entries the loader set aside",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="show the entries set aside")
    listing.set_defaults(func=run_list)
    requeue = actions.add_parser("requeue", help="append them to the ingest log again")
    requeue.add_argument(
        "--start", type=int, nargs="*", help="only the entries at these log positions"
    )
    requeue.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for loading (300)"
    )
    requeue.set_defaults(func=run_requeue)
