"""Ingest-log entries the store refuses for good, set aside so that loading goes on.

Why: the loader retries a failing round and never skips acknowledged data, which is right for a
full disk or a store that is down. But an entry the store can never take would fail every
retry, and each later round with it: loading stops for good, the backlog fills and ingest
answers 503. It happened once (timestamps before year 1 got a 202, then no round could hold
their rollup day), and it can happen again with any value validation lets through and the
store refuses, or with an entry written by a newer version.

How (:func:`isolate`): after :data:`ROUND_TRIES` failed tries of one round the loader splits
it. Each half is loaded as a transaction of its own; a half that fails is split again, so the
entries beside a bad one still load, once each. A single entry that still fails
:data:`ENTRY_TRIES` times is written to ``<log directory>/quarantine/<start>.json`` (its bytes,
its log positions, the error, when), fsync'd, and only then does the store record the log
position past it, in a transaction of its own. A store that cannot commit at all fails that
transaction too, so nothing is set aside and the loader retries as before: before each try, and
at the next start, a file whose entry the store's position has not passed is removed
(:func:`settle`). An entry whose tries fail with different errors is not set aside either (a
store in trouble, rather than a bad entry), nor one whose error says the disk, memory or the
connection failed (:func:`environmental`). A store whose round is one transaction (DuckDB)
splits any failing round. ClickHouse has no transactions: it splits a round that failed to be
read, or one whose every try failed storing provably nothing of it (its first insert refused
while ClickHouse checked the block's values, say a ``CHECK`` constraint, before it wrote any
part: :class:`avila.storage.load_rounds.NothingStored`), so that each entry, loaded as a round
of its own with its own deduplication tokens, duplicates nothing. A round that may be partly
stored (a later insert failed, the connection was lost, a restart replays it) is retried
whole, as its deduplication needs (:meth:`avila.storage.loader.Loader._may_split`); so is a
single entry, which is then never set aside.

Set-aside entries are counted in ``/health`` (``ingest_log.quarantined``) and ``/metrics``
(``avila_ingest_quarantined_entries``); ``avila quarantine list | requeue``
(:mod:`avila.commands.quarantine`) shows them and appends them to the log again.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from avila.storage.log_segments import read_frames

log = logging.getLogger("avila.ingest.loader")

#: failed tries of one round before it is split (with the loader's backoff, about 1.5 s)
ROUND_TRIES = 5
#: failed tries of one entry alone before it is set aside
ENTRY_TRIES = 3
#: the pause before the tries of one entry after the first (seconds)
ENTRY_BACKOFF_S = (0.2, 0.5)

#: At most this many entries are set aside per :data:`LIMIT_WINDOW_S`; past it the loader
#: retries instead (so many refusals more likely mean a store in trouble than bad entries)
LIMIT = 100
LIMIT_WINDOW_S = 600.0

DIRECTORY = "quarantine"
_SUFFIX = ".json"

#: ``(start, end)`` log positions of one entry
Entry = tuple[int, int]


def directory(log_directory: Path) -> Path:
    return Path(log_directory) / DIRECTORY


def count(log_directory: Path) -> int:
    """How many entries are set aside (a directory listing: cheap enough for ``/health``)."""
    try:
        return sum(1 for name in os.listdir(directory(log_directory)) if name.endswith(_SUFFIX))
    except FileNotFoundError:
        return 0


def entries(log_directory: Path) -> list[dict[str, Any]]:
    """The set-aside entries, oldest first: ``start``, ``end``, ``kind``, ``error``,
    ``quarantined_at`` and ``payload`` (the entry's bytes, as in the log)."""
    found = []
    place = directory(log_directory)
    for name in sorted(os.listdir(place)) if place.exists() else []:
        if name.endswith(_SUFFIX):
            record = json.loads((place / name).read_text())
            record["payload"] = base64.b64decode(record.pop("payload_base64"))
            found.append(record)
    return found


def remove(log_directory: Path, start: int) -> None:
    """Forget the set-aside entry at ``start`` (its copy is back in the log)."""
    (directory(log_directory) / f"{start:020d}{_SUFFIX}").unlink(missing_ok=True)
    _sync_directory(directory(log_directory))


def entries_between(log_directory: Path, start: int, end: int) -> list[Entry]:
    """The log entries from ``start`` up to ``end``, each from the end of the one before (the
    first from ``start``): ranges that follow each other, as rounds must, even across bytes no
    entry holds (a torn tail before the next segment)."""
    found = []
    for entry_end, _ in read_frames(log_directory, start, end):
        found.append((start, entry_end))
        start = entry_end
    return found


def settle(log_directory: Path, loaded: int) -> None:
    """Undo what a crash interrupted: an entry the store's position has not passed was not set
    aside (it loads, or is set aside, again)."""
    place = directory(log_directory)
    if not place.exists():
        return
    for name in os.listdir(place):
        if name.endswith(_SUFFIX) and int(name[: -len(_SUFFIX)]) >= loaded:
            os.unlink(place / name)
    _sync_directory(place)


def isolate(
    entries_of_range: list[Entry],
    load: Callable[[int, int], None],
    skip: Callable[[int, int], None],
    log_directory: Path,
    allow: Callable[[], None] = lambda: None,
) -> int:
    """Load the entries of a round that failed whole (see the module doc): ``load(start, end)``
    loads a range in one transaction or raises; ``skip(start, end)`` records the position
    ``end`` without rows; ``allow()`` raises if no entry may be set aside now. Returns how many
    entries were set aside. Raises if one cannot be set aside (``allow``, or the store cannot
    commit even the skip): the caller retries later."""
    if not entries_of_range:
        return 0
    try:
        load(entries_of_range[0][0], entries_of_range[-1][1])
        return 0
    except Exception as exc:
        error = exc
    if len(entries_of_range) > 1:
        middle = len(entries_of_range) // 2
        return isolate(entries_of_range[:middle], load, skip, log_directory, allow) + isolate(
            entries_of_range[middle:], load, skip, log_directory, allow
        )
    start, end = entries_of_range[0]
    errors = {str(error)}
    for pause in ENTRY_BACKOFF_S[: ENTRY_TRIES - 1]:
        time.sleep(pause)
        try:
            load(start, end)
            return 0
        except Exception as exc:
            error = exc
            errors.add(str(exc))
    if len(errors) > 1:  # failing in different ways: more likely the store than the entry
        raise RuntimeError(f"entry at {start} failed {len(errors)} different ways: retried")
    if environmental(error):
        raise RuntimeError(f"entry at {start} failed on the store's side ({error}): retried")
    allow()
    _set_aside(log_directory, entries_of_range[0], error, skip)
    return 1


#: Store errors (by class name, so no backend is imported here) that no entry can cause.
_ENVIRONMENTAL_TYPES = frozenset({"IOException", "OutOfMemoryException", "OperationalError"})
_ENVIRONMENTAL_TEXT = (
    "no space left",
    "disk full",
    "disk quota",
    "input/output error",
    "read-only file system",
    "out of memory",
    "cannot allocate memory",
    # ClickHouse
    "memory limit",
    "memory_limit_exceeded",
    "not_enough_space",
    "too_many_parts",
    "timeout",
    "connection refused",
    "connection reset",
)


def environmental(error: BaseException) -> bool:
    """Whether ``error`` says the disk, memory or the connection failed, not the entry: such
    an entry is never set aside, however often it fails (a disk that fills up and frees space
    again between an entry's tries and its skip would otherwise set a good entry aside). The
    errors it was raised from count too (a store's error wrapped by the store layer)."""
    seen: BaseException | None = error
    for _ in range(8):  # (a cause chain is short; never loop on a cycle)
        if seen is None:
            return False
        if isinstance(seen, (OSError, MemoryError)) or type(seen).__name__ in _ENVIRONMENTAL_TYPES:
            return True
        text = str(seen).lower()
        if any(marker in text for marker in _ENVIRONMENTAL_TEXT):
            return True
        seen = seen.__cause__
    return False


def _set_aside(
    log_directory: Path, entry: Entry, error: Exception, skip: Callable[[int, int], None]
) -> None:
    start, end = entry
    payload = b"".join(p for _, p in read_frames(log_directory, start, end))
    place = directory(log_directory)
    place.mkdir(exist_ok=True)
    record = {
        "start": start,
        "end": end,
        "kind": payload[0] if payload else None,
        "error": f"{type(error).__name__}: {error}",
        "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "payload_base64": base64.b64encode(payload).decode(),
    }
    path = place / f"{start:020d}{_SUFFIX}"
    with open(path, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    _sync_directory(place)
    # If the skip raises, its commit may still have landed: the file stays, and the loader's
    # next try keeps or removes it by the store's position (settle).
    skip(start, end)
    log.error(
        "ingest log entry set aside: it failed to load every time",
        extra={"start": start, "end": end, "error": record["error"], "file": str(place)},
    )


def _sync_directory(place: Path) -> None:
    fd = os.open(place, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
