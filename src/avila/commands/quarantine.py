"""avila quarantine list | requeue: the ingest-log entries the loader set aside.

An entry the store refused every time it was loaded is kept, byte for byte, in the ingest log's
``quarantine/`` directory instead of stopping all loading (docs/ingestion.md, "An entry the store
refuses"). ``list`` shows them (also while the server runs). ``requeue`` appends them to the
ingest log again, after the cause is fixed (an upgrade that reads a newer entry kind, space for
a store that failed), waits until the log is loaded and says, per entry, whether it loaded or
was set aside again; the old file is removed once its copy is durable in the log.

``requeue`` opens the store itself: stop ``avila serve`` first (a DuckDB file or chdb directory
admits one process). A crash between the copy's append and the removal of the old file leaves
the file, and the copy may load (or be set aside again, a second file with the same bytes).
So before appending, requeue looks the entry's rows up in the store: an entry whose rows are
all stored is not appended again (its file goes), one partly stored is left alone, and files
holding the same bytes are appended once.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta
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
        loaded = failed = 0
        groups: list[list[dict[str, Any]]] = []
        for group in _same_bytes(chosen):
            first = group[0]["start"]
            for twin in group[1:]:
                print(f"{twin['start']}: the same bytes as the entry at {first}: requeued once")
            stored, rows = _stored_rows(store, group[0]["payload"])
            if rows and stored == rows:
                for entry in group:
                    quarantine.remove(config.directory, int(entry["start"]))
                loaded += len(group)
                print(f"{first}: already stored (an earlier requeue loaded it): file removed")
            elif stored:
                failed += len(group)
                print(
                    f"{first}: {stored} of its {rows} rows are already stored: left set aside"
                    " (appending it would store those twice)"
                )
            else:
                groups.append(group)
        copies = asyncio.run(_append(ingest_log, groups, config.directory))
        if not progress.wait_loaded(progress.durable, args.timeout):
            print(f"the log is not loaded after {args.timeout} s; it goes on at the next start")
            return 1
        again = {int(e["start"]): e for e in quarantine.entries(config.directory)}
        for group, (start, _end) in zip(groups, copies, strict=True):
            if start in again and start not in before:
                failed += len(group)
                print(f"{group[0]['start']}: set aside again at {start}: {again[start]['error']}")
            else:
                loaded += len(group)
                print(f"{group[0]['start']}: loaded (log position {start})")
    finally:
        store.close()
    print(f"{loaded} of {len(chosen)} entries loaded")
    return 1 if failed else 0


def _same_bytes(chosen: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The entries grouped by their bytes, in order of first appearance: a copy that was set
    aside again beside the file a crash left holds the same entry."""
    groups: dict[bytes, list[dict[str, Any]]] = {}
    for entry in chosen:
        groups.setdefault(entry["payload"], []).append(entry)
    return list(groups.values())


#: Event ids per lookup: one query per chunk keeps the parameter list short on both backends.
_ID_CHUNK = 1000


def _stored_rows(store: Any, payload: bytes) -> tuple[int, int]:
    """``(stored, rows)``: how many of the entry's rows the store already holds, by identity —
    an event by ``(project_id, event_id)``, a reading by all its columns (its request's
    ``received_at`` stamp included). ``(0, 0)`` for an entry that cannot be read."""
    from avila.storage import frames

    try:
        kind = frames.kind(payload)
        readings = frames.decode_telemetry(payload).readings if kind == frames.TELEMETRY else None
        keys = set(frames.event_keys(payload)) if kind == frames.EVENTS else set()
    except Exception:  # an entry this version cannot read: nothing of it can be stored
        return 0, 0
    if readings is not None:
        return _stored_readings(store, readings)
    by_project: dict[str, list[str]] = {}
    for project_id, event_id in keys:
        by_project.setdefault(project_id, []).append(event_id)
    stored = 0
    for project_id, ids in by_project.items():
        for at in range(0, len(ids), _ID_CHUNK):
            chunk = ids[at : at + _ID_CHUNK]
            ((found,),) = store.query(
                "SELECT count(DISTINCT event_id) FROM events WHERE project_id = ?"
                f" AND event_id IN ({', '.join('?' * len(chunk))})",
                [project_id, *chunk],
            )
            stored += int(found)
    return stored, len(keys)


#: A reading's identity: every column the loader writes (``received_at`` is its request's stamp).
_READING_COLUMNS = ("project_id", "device_id", "ts", "metric", "value", "received_at")


def _stored_readings(store: Any, readings: Any) -> tuple[int, int]:
    wanted = _reading_identities(readings)
    found: set[tuple[Any, ...]] = set()
    # one request's readings share project and stamp: one narrow range read per request
    for project_id, received_at in {(r[0], r[5]) for r in wanted}:
        times = [r[2] for r in wanted if r[0] == project_id and r[5] == received_at]
        found |= _reading_identities(
            store.query_arrow(
                f"SELECT {', '.join(_READING_COLUMNS)} FROM telemetry WHERE project_id = ?"
                " AND received_at = ? AND ts BETWEEN ? AND ?",
                [project_id, *map(_naive_utc, (received_at, min(times), max(times)))],
            )
        )
    return len(wanted & found), len(wanted)


def _reading_identities(table: Any) -> set[tuple[Any, ...]]:
    import pyarrow as pa

    def values(name: str) -> list[Any]:
        column = table.column(name)
        if name in ("ts", "received_at"):  # epoch µs: the same on both backends' types
            column = column.cast(pa.timestamp("us")).cast(pa.int64())
        return list(column.to_pylist())

    return set(zip(*(values(name) for name in _READING_COLUMNS), strict=True))


def _naive_utc(micros: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=micros)


async def _append(
    ingest_log: Any, groups: list[list[dict[str, Any]]], directory: Path
) -> list[tuple[int, int]]:
    """Append each group's entry once; remove the group's files once the copy is durable."""
    from avila.storage import quarantine
    from avila.storage.log_segments import HEADER

    copies = []
    for group in groups:
        payload: bytes = group[0]["payload"]
        end = await ingest_log.append(payload, 0)
        copies.append((end - HEADER.size - len(payload), end))
        for entry in group:
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
