"""Reading a loader round out of the ingest log: its entries decoded and laid out as Arrow
tables for the store (:class:`RoundReader`), in one piece or several.

See :mod:`avila.storage.loader` for how rounds are sized and committed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from avila.storage import frames, rollups
from avila.storage.load_rounds import Prepared
from avila.storage.log_segments import read_frames

if TYPE_CHECKING:
    from avila.storage.base import Store

log = logging.getLogger("avila.ingest.loader")

MESSAGE_SCHEMA = pa.schema(
    [("project_id", pa.string()), ("message_id", pa.string()), ("received_at", pa.timestamp("us"))]
)

#: the most bytes of log a catch-up round reads (see :attr:`Loader.catch_up_rows`)
CATCH_UP_BYTES = 256 << 20
#: a round's events are turned into Arrow this many rows at a time
ARROW_CHUNK_ROWS = 16_384
#: Memory of the loader's Arrow tables. mimalloc, pyarrow's default, gives a finished round's
#: pages back to the system and faults fresh ones in for the next: measured +1 us of system
#: time per event in catch-up rounds (-0.1 to -0.3 us in ordinary ones) against glibc's malloc.
ARROW_POOL = pa.system_memory_pool()


#: Rounds larger than this go into their transaction in pieces of about this many rows, each
#: as soon as it is read: the commit thread appends one while the read thread decodes the next
#: (a catch-up round read whole before its commit began left the two threads taking turns).
PIECE_ROWS = 32_768


def identity_links(columns: dict[str, list[Any]]) -> pa.Table | None:
    """The identity links carried by one entry's events (see :mod:`avila.identity`)."""
    if "custom" not in columns["event_type"]:
        return None
    from avila.identity import links_from_rows
    from avila.ingest.validation import EventRows

    received = datetime(1970, 1, 1) + timedelta(microseconds=columns["received_at"][0])
    return links_from_rows(EventRows(columns["project_id"][0], received, columns))


@functools.cache
def _link_names() -> frozenset[bytes]:
    """The event names of identity links, as :func:`frames.decode_event_values` gives them."""
    from avila.identity import LINK_EVENTS

    return frozenset(name.encode() for name in LINK_EVENTS)


class RoundReader:
    """Reads rounds of the log in ``directory`` for ``store``: ``max_rows`` rows or
    ``max_bytes`` of log at most, up to ``catch_up_rows`` when a backlog waits (see
    :class:`avila.storage.loader.Loader`); a round starting below ``replay_end`` ends exactly
    there (:meth:`avila.storage.base.Store.pending_log_round`)."""

    def __init__(
        self,
        store: Store,
        directory: Path,
        *,
        max_bytes: int,
        max_rows: int,
        catch_up_rows: int,
        replay_end: int,
    ) -> None:
        self.store = store
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.catch_up_rows = catch_up_rows
        self.replay_end = replay_end

    def round_end(self, start: int, target: int) -> int:
        """An end for a round from ``start`` at least as far as any round read reaches (each
        entry holds a row or more); ``start`` if nothing is readable."""
        end = start
        most = max(self.max_rows, self.catch_up_rows)
        limit = max(self.max_bytes, CATCH_UP_BYTES)
        for count, (entry_end, _) in enumerate(read_frames(self.directory, start, target, limit)):
            end = entry_end
            if count + 1 >= most:
                break
        return end

    def pieces(
        self, start: int, target: int, piece_rows: int | None = None, *, whole: bool = False
    ) -> Iterator[Prepared]:
        """Read one round from ``start`` up to ``target`` (bounded by max_rows / max_bytes, or
        by the catch-up limits, unless ``whole``), in pieces of about ``piece_rows`` rows
        (default: one piece)."""
        started = time.perf_counter()
        replay = start < self.replay_end
        if replay:
            target = self.replay_end
        event_batches: list[dict[str, Any]] = []
        event_tables: list[pa.Table] = []
        batched = 0  # rows in event_batches
        readings: list[pa.Table] = []
        devices: list[pa.Table] = []
        messages: dict[str, list[Any]] = {"project_id": [], "message_id": [], "received_at": []}
        links: list[pa.Table] = []
        end = start
        rows = 0
        in_piece = 0  # rows since the last piece
        catching_up = False
        max_bytes = None if replay or whole else max(self.max_bytes, CATCH_UP_BYTES)
        for frame_end, payload in read_frames(self.directory, start, target, max_bytes):
            kind = frames.kind(payload)
            if kind == frames.EVENTS:
                columns = frames.decode_event_values(memoryview(payload))
                event_batches.append(columns)
                batched += len(columns["event_id"])
                if batched >= ARROW_CHUNK_ROWS:
                    # Python lists of a whole catch-up round would hold ~2 KB per event; Arrow
                    # holds the values in place and the fresh memory is reused.
                    event_tables.append(frames.events_to_arrow(event_batches, ARROW_POOL))
                    event_batches, batched = [], 0
                rows += len(columns["event_id"])
                if not _link_names().isdisjoint(columns["event_name"]):
                    found = identity_links(frames.decode_events(memoryview(payload)))
                    if found is not None:
                        links.append(found)
            elif kind == frames.TELEMETRY:
                entry = frames.decode_telemetry(memoryview(payload))
                readings.append(entry.readings)
                rows += entry.readings.num_rows
                if entry.devices is not None:
                    devices.append(entry.devices)
                if entry.message is not None:
                    messages["project_id"].append(entry.message[0])
                    messages["message_id"].append(entry.message[1])
                    received = entry.readings.column("received_at")
                    messages["received_at"].append(received[0].value if len(received) else 0)
            else:  # (written by a newer version?) set aside, never dropped
                raise ValueError(f"ingest log entry of unknown kind {kind}")
            end = frame_end
            if not replay and not whole:
                if catching_up:
                    if rows >= self.catch_up_rows:
                        break
                elif rows >= self.max_rows or end - start >= self.max_bytes:
                    # Grow into a catch-up round only if the backlog (estimated by this round's
                    # bytes per row) fills at least half of one: one of DuckDB's row groups.
                    backlog_rows = (target - start) * rows / (end - start)
                    if rows >= self.catch_up_rows or 2 * backlog_rows < self.catch_up_rows:
                        break
                    catching_up = True
            if piece_rows is not None and rows - in_piece >= piece_rows and end < target:
                # (a piece that ends the round is its final piece, below)
                yield self._piece(
                    start, end, rows - in_piece, event_tables, event_batches, links, readings,
                    devices, messages, started, final=False,
                )  # fmt: skip
                event_tables, event_batches, batched = [], [], 0
                links, readings, devices = [], [], []
                messages = {"project_id": [], "message_id": [], "received_at": []}
                in_piece, started = rows, time.perf_counter()
        if end == start:
            # Nothing readable although the log says it is durable: its segment is gone (deleted
            # by hand). Skip to the target rather than stall forever; say so loudly.
            log.error(
                "ingest log: durable range unreadable; skipped", extra={"from": start, "to": target}
            )
            end = target
        yield self._piece(
            start, end, rows - in_piece, event_tables, event_batches, links, readings, devices,
            messages, started, final=True,
        )  # fmt: skip

    def _piece(
        self,
        start: int,
        end: int,
        rows: int,
        event_tables: list[pa.Table],
        event_batches: list[dict[str, Any]],
        links: list[pa.Table],
        readings: list[pa.Table],
        devices: list[pa.Table],
        messages: dict[str, list[Any]],
        started: float,
        *,
        final: bool,
    ) -> Prepared:
        tables: list[tuple[str, pa.Table]] = []
        if links:
            # Identity links ($identify / $alias events) go in with their events: a read that
            # sees the events sees the stitching too.
            tables.append(("identities", pa.concat_tables(links)))
        if readings:
            tables.append(
                ("telemetry", pa.concat_tables(readings) if len(readings) > 1 else readings[0])
            )
        if messages["message_id"]:
            tables.append(
                (
                    "telemetry_messages",
                    pa.Table.from_arrays(
                        [
                            pa.array(messages["project_id"], pa.string()),
                            pa.array(messages["message_id"], pa.string()),
                            pa.array(messages["received_at"], pa.int64()).cast(pa.timestamp("us")),
                        ],
                        schema=MESSAGE_SCHEMA,
                    ),
                )
            )
        if event_batches:
            event_tables.append(frames.events_to_arrow(event_batches, ARROW_POOL))
        events = None
        if event_tables:
            events = event_tables[0] if len(event_tables) == 1 else pa.concat_tables(event_tables)
        if events is not None and self.store.has_rollups:
            # The rollups' aggregation here, beside the next round's commit, not inside it.
            found = rollups.partials(events)
            if found is not None:
                tables.extend(zip(rollups.TABLES, found, strict=True))
        return Prepared(
            end,
            rows,
            events,
            pa.concat_tables(devices) if devices else None,
            tables,
            time.perf_counter() - started,
            start,
            final,
        )
