"""DuckDB SQL fragments used by :mod:`avila.analytics`.

Backend differences are data: each backend ships a dict with the same keys; analytics code
formats ``{0}``/``{1}`` with column expressions and binds values as ``?`` parameters, never as
text. A ClickHouse backend would map e.g. ``match_prefix`` to ``startsWith({0}, ?)`` and
``json_string`` to ``JSONExtractString({0}, ?)`` (with the path split into keys).

**One source of events.** Every analytics read (funnels, retention, RFM, trends, overview,
sessions, profiles, realtime) takes its rows from ``FRAGMENTS["events_source"]`` (through
:func:`avila.analytics.common.events_source`), never from ``events`` by name. It is a relation
with the events table's columns; with identity stitching it is the ``events_resolved`` view
(events LEFT JOIN the materialised person map, :mod:`avila.storage.person_map`), whose
``user_id`` is the resolved person, so a stitched person is one user in funnels, retention, profiles, sessions and
RFM. Without stitching it is simply::

    "events_source": "events",

and nothing else changes. A project without any identity link (``stitching_probe`` finds
none) reads ``events_unstitched`` (the table) instead, so it does not pay for the join. Filters on ``project_id``/``ts``/``received_at`` are pushed through
the view into the ``events`` scan (the real-time test checks the rows scanned). Writes (GDPR
erase) target the ``events`` table itself, for the user and the ``person_aliases`` ids.
"""

from __future__ import annotations

from avila.storage.person_map import PROBE

FRAGMENTS: dict[str, str] = {
    # The relation analytics read events from (see the module docstring): a table, view or
    # parenthesised subquery with the events table's columns.
    # events_resolved joins the materialised person map (avila.storage.person_map).
    "events_source": "events_resolved",
    # No row: the project has no identity link, and reads the table directly (no join to pay
    # for). One row: whether the project's person map is current (true: ``events_source``;
    # false: ``events_resolved``, the recursive view, exact while the map is rebuilt).
    "stitching_probe": PROBE,
    "events_unstitched": "events",
    "events_resolved": "events_resolved_live",
    # The ids that resolve to a person (parameters: project_id, user_id); "" without stitching.
    "person_aliases": "SELECT anonymous_id FROM identity_resolved WHERE project_id = ? AND user_id = ?",
    # Microseconds since the Unix epoch of a naive UTC TIMESTAMP.
    "epoch_us": "epoch_us({0})",
    # A JSON text column's value at the JSONPath bound as the parameter, as VARCHAR (or NULL).
    "json_string": "json_extract_string({0}, ?)",
    "to_double": "TRY_CAST({0} AS DOUBLE)",
    "match_exact": "({0} = ?)",
    "match_prefix": "starts_with({0}, ?)",
    "match_contains": "contains({0}, ?)",
    "match_regex": "regexp_matches({0}, ?)",
    # Compiles a pattern with the backend's regex engine; raises on a bad pattern.
    "regex_probe": "SELECT regexp_matches('', ?)",
    # Integer floor division of non-negative BIGINTs.
    "int_div": "(({0}) // ({1}))",
    # Year*12 + month-1 of the timestamp at {0} microseconds since the epoch.
    "month_index": "(year(make_timestamp({0})) * 12 + month(make_timestamp({0})) - 1)",
    "list_agg": "list({0})",
    # True for events that replay history rather than happen now (see docs/analytics.md,
    # "Real time"): the demo's events and loads marked `metadata.source` "backfill"/"import".
    # Constant SQL: the real-time counters exclude these rows without a parameter.
    "replayed_event": "coalesce(json_extract_string(metadata, '$.source'), '')"
    " IN ('demo', 'backfill', 'import')",
    # The smallest (time, name) pair of a group as a record with fields t and n (ClickHouse:
    # a named tuple, ``min(tuple({0}, {1}))``); paths use it to find a user's first event.
    # Marks a CTE that is read more than once to be computed once ("" where not supported).
    "cte_materialized": "MATERIALIZED",
    # A set of small non-negative integers {0} (clamped to [{1}, {2}], at most 63) as the
    # bits of an integer, and bit {1} of it as 0/1; lifecycle keeps a user's active periods
    # so (an integer state per group: cheaper to aggregate and to group by than a bit string).
    "bitset_agg": "bit_or(1::UBIGINT << least(greatest({0}, {1}), {2}))",
    "bit_at": "((({0}) >> ({1})) & 1)",
    # Stickiness: one bit per active day OR-ed per (user, period), then counted (ClickHouse:
    # bitShiftLeft(toUInt64(1), x), groupBitOr, bitCount, toDayOfMonth).
    "bit": "(1::UBIGINT << ({0}))",
    "bit_or_agg": "bit_or({0})",
    "popcount": "bit_count({0})",
    # bits {1} .. of integer {0}, masked by {2}
    "bits_of": "((({0}) >> ({1})) & {2})",
    "day_of_month": "dayofmonth(make_timestamp({0}))",
    "min_pair": "min({{'t': {0}, 'n': {1}}})",
    # Typed NULLs (ClickHouse needs a Nullable type to cast NULL to).
    "null_text": "CAST(NULL AS VARCHAR)",
    "null_double": "CAST(NULL AS DOUBLE)",
    # {0} as a type that admits NULL (ClickHouse aggregates of non-Nullable columns over no
    # rows give 0 or nan instead of NULL).
    "nullable": "{0}",
    # Previous / next value in the window, NULL at the partition's edge (ClickHouse: the
    # type's default value unless the argument is Nullable).
    "lag": "lag({0})",
    "lead": "lead({0})",
    # The last non-NULL value of {0} in the window frame.
    "last_non_null": "last_value({0} IGNORE NULLS)",
    # Value of {0} at the largest {1} (NULL over no rows).
    "arg_max": "arg_max({0}, {1})",
    # A relation r with one column i = 1 .. {0} - 1 (a cross join makes one row per i).
    "series_from_1": "range(1, {0}) AS r(i)",
    # Midnight (UTC) of the timestamp {0}, as a timestamp.
    "day_start": "date_trunc('day', {0})",
    # Start of the {0}-microsecond bucket (an integer SQL expression) holding the timestamp
    # {1}, buckets aligned to 2000-01-03 00:00 UTC (DuckDB's time_bucket origin).
    "time_bucket_us": "time_bucket(to_microseconds(({0})::BIGINT), {1})",
    # The product_id of every item of a purchase's data.items, one row each (set-returning).
    "purchase_item_ids": "unnest(json_extract_string({0}, '$.items[*].product_id'))",
    # A 64-bit hash of {0} for sampling (differs between backends: samples differ).
    "hash": "hash({0})",
    # The first 60 bits (15 hex digits) of the MD5 of text {0}, as an unsigned integer: the
    # experiments' assignment bucket, equal to Python's hashlib on every backend.
    "md5_prefix60": "('0x' || substr(md5({0}), 1, 15))::UBIGINT",
}
