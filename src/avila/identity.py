"""Identity stitching: which anonymous id belongs to which known user.

An ``$identify`` custom event whose ``metadata.anonymous_id`` names an anonymous id, or an
``$alias`` event whose ``metadata.previous_id`` names an earlier id, links that id to the event's
``user_id``. Links are appended to the ``identities`` table; the backend's ``events_resolved``
view (see ``avila.storage.duckdb.migrations``) shows every event under the user its
``user_id`` resolves to, so funnels, retention, profiles and sessions count a stitched person once.

The Segment adapter (``avila.ingest.segment``) and the browser tracker (``/avila.js``) produce
these events; any client of ``POST /api/v1/events`` may send them too.

Resolution rules (the same as Mixpanel's "simplified ID merge"): an id links to the *first*
user it was identified as (earliest ``ts``, then ``received_at``), so a later login of someone
else on a shared device does not move the earlier history; links chain (``a -> b -> c``
resolves ``a`` to ``c``) up to :data:`MAX_CHAIN` hops. Links are never rewritten, only appended.

Why an ingest listener: the link is written right after the event that carries it commits, for
every ingestion path, without the HTTP layer knowing about identities. :meth:`IdentityRecorder.settle`
lets a caller (the Segment API) wait until the links of its events are durable too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import msgspec
import pyarrow as pa

from avila.errors import StorageUnavailable
from avila.ingest.validation import EventRows
from avila.storage.base import Store

log = logging.getLogger("avila.identity")

IDENTITIES_TABLE = "identities"
#: Longest alias chain the resolution view follows.
MAX_CHAIN = 8
#: Custom event name -> the metadata key naming the id it links to the event's user_id.
LINK_EVENTS: dict[str, str] = {"$identify": "anonymous_id", "$alias": "previous_id"}

IDENTITY_SCHEMA = pa.schema(
    [
        ("project_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("user_id", pa.string()),
        ("ts", pa.timestamp("us")),
        ("received_at", pa.timestamp("us")),
        ("source", pa.string()),
        ("event_id", pa.string()),
    ]
)

_decode_metadata = msgspec.json.Decoder(dict[str, object]).decode


def links_from_rows(rows: EventRows) -> pa.Table | None:
    """The identity links carried by ``rows`` as an :data:`IDENTITY_SCHEMA` table (or None).

    Timestamps in ``rows`` are epoch microseconds (UTC), as the validator leaves them.
    """
    cols = rows.columns
    out: dict[str, list[object]] = {name: [] for name in IDENTITY_SCHEMA.names}
    received_us = int((rows.received_at - datetime(1970, 1, 1)).total_seconds() * 1_000_000)
    for i, (etype, name) in enumerate(zip(cols["event_type"], cols["event_name"], strict=True)):
        key = LINK_EVENTS.get(name) if etype == "custom" and name else None
        if key is None:
            continue
        try:
            metadata = _decode_metadata(cols["metadata"][i])
        except msgspec.DecodeError:
            continue
        other = metadata.get(key)
        user_id = cols["user_id"][i]
        if not isinstance(other, str) or not other or other == user_id or len(other) > 256:
            continue
        out["project_id"].append(rows.project_id)
        out["anonymous_id"].append(other)
        out["user_id"].append(user_id)
        out["ts"].append(cols["ts"][i])
        out["received_at"].append(received_us)
        out["source"].append(name[1:])
        out["event_id"].append(cols["event_id"][i])
    if not out["user_id"]:
        return None
    arrays = [
        pa.array(out[f.name], type=pa.int64()).cast(f.type)
        if pa.types.is_timestamp(f.type)
        else pa.array(out[f.name], type=f.type)
        for f in IDENTITY_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=IDENTITY_SCHEMA)


class IdentityRecorder:
    """Ingest listener that appends the links of committed events to ``identities``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: set[asyncio.Task[bool]] = set()
        self.failures = 0

    def on_rows(self, rows: EventRows) -> None:
        """Called by the ingest service, on its event loop, after ``rows`` are committed."""
        table = links_from_rows(rows)
        if table is None:
            return
        task = asyncio.get_running_loop().create_task(self._append(table), name="identities")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _append(self, table: pa.Table) -> bool:
        # Never raises: nobody may await this task (the REST path does not), and an unretrieved
        # task exception would only surface at garbage collection.
        try:
            await self.store.append_table_async(IDENTITIES_TABLE, table)
        except Exception:
            self.failures += 1
            log.exception("identity links not stored", extra={"links": table.num_rows})
            return False
        return True

    async def settle(self) -> None:
        """Wait until every link scheduled so far is stored; StorageUnavailable if one failed."""
        if self._pending:
            # shield: a caller that is cancelled must not cancel a write others wait for.
            done = await asyncio.gather(*(asyncio.shield(t) for t in list(self._pending)))
            if not all(done):
                raise StorageUnavailable("identity links could not be stored")

    async def close(self) -> None:
        """Wait for pending writes (used at shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
