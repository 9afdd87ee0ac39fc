"""Identity stitching: which anonymous id belongs to which known user.

An ``$identify`` custom event whose ``metadata.anonymous_id`` names an anonymous id, or an
``$alias`` event whose ``metadata.previous_id`` names an earlier id, links that id to the event's
``user_id``. Links are appended to the ``identities`` table; the backend's ``events_resolved``
view (see ``avila.storage.duckdb.migrations``) shows every event under the user its
``user_id`` resolves to, so funnels, retention, profiles and sessions count a stitched person once.
On DuckDB that view joins the materialised person map (:mod:`avila.storage.person_map`), which
every writer of links updates in the same transaction; ``identity_resolved`` is the recursive
definition of the same resolution.

The Segment adapter (``avila.ingest.segment``) and the browser tracker (``/avila.js``) produce
these events; any client of ``POST /api/v1/events`` may send them too.

Resolution rules (the same as Mixpanel's "simplified ID merge"): an id links to the *first*
user it was identified as (earliest ``ts``, then ``received_at``, then ``user_id``), so a later
login of someone else on a shared device does not move the earlier history; links chain
(``a -> b -> c`` resolves ``a`` to ``c``) up to :data:`MAX_CHAIN` hops. Links are never
rewritten, only appended.

Cycles: where the first links form a cycle (``alias`` or ``$identify`` both ways: ``a -> b``,
then ``b -> a``; or ``a -> b -> c -> a``) of at most :data:`MAX_CHAIN` links, the *latest* of
the cycle's links by the same key (``ts``, ``received_at``, ``user_id``; distinct within a
cycle) is not followed: when it was made its ids were already one person, so it adds nothing,
as a link inside one of Mixpanel's identity clusters adds nothing. The id whose link that is
becomes the person: ``a -> b`` then ``b -> a`` resolve both to ``b``, ``a -> b``, ``b -> c``,
``c -> a`` all to ``c``, and a tail ``x -> a`` follows them. That id's own later links still
move nobody (its first link was into the cycle), nor do the others' (their first links stand);
a late link with an earlier ``ts`` may replace a first link and so dissolve or close a cycle,
like any late link. A cycle of more than :data:`MAX_CHAIN` links is not seen as one: each of
its ids resolves :data:`MAX_CHAIN` hops on, as in a chain that long. Before this rule
(DuckDB migration 11, ClickHouse migration 8), a cycle was walked round until the hop limit
and its ids resolved by the parity of :data:`MAX_CHAIN`: one person counted as two.

Where links are written: the ingest log's loader (``avila.storage.loader``) stores the links
of a round (:func:`links_from_rows`) in the same transaction as the events that carry them, for
every ingestion path, so an event is never readable before its link.
"""

from __future__ import annotations

import logging
from datetime import datetime

import msgspec
import pyarrow as pa

from avila.ingest.validation import EventRows

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
