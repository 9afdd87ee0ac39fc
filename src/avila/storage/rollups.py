"""Daily rollups of the events table, kept exact as events are written and erased.

Two tables of *partial* aggregates (append-only, like a ClickHouse SummingMergeTree before its
merge): every write appends one row per key of the rows it wrote, so a key may have several
rows and readers always ``sum`` them. Late and out-of-order events simply add a row to their
own (UTC) day; nothing is rewritten, so the rollups are updated inside the very transaction
that appends the events (the loader's round, :meth:`DuckDBStore.append_events`) and are
exactly as crash-safe as the events.

Writers compute a write's partials with Arrow (:func:`partials`: one hash aggregation per key
set, no SQL to plan) and append them as two small tables (:func:`add_partials`); the loader does
the aggregation in its read thread, off the store transaction. ``DAILY_FROM`` is the same
aggregation in SQL, for the migration, the readers' partial days and erasure; a test holds the
two to the same rows.

* ``rollup_daily (project_id, day, event_type, kind, value, events, revenue)``: per UTC day
  and event type, ``kind`` ``'type'`` (value NULL: events and revenue of the type), ``'url'``
  (events per url) or ``'referrer'`` (events per referrer). Counts by type, page and referrer
  do not depend on who the user is, so identity stitching does not touch this table.
* ``rollup_user_days (project_id, day, user_id, country, device_type, events, user_key)``: one
  row per user, UTC day, country and device type seen. Distinct users over any set of whole
  days (unique users, DAU/WAU/MAU, users by country or device) are ``count(DISTINCT ...)`` over
  it; with identity stitching readers map ``user_id`` through the resolved identities first, so
  links added later are honoured without rewriting anything. ``user_key`` (:data:`USER_KEY`) is
  a 128-bit hash of ``user_id`` that readers which only group or join users use instead of the
  string (see there).

Revenue is summed as DECIMAL(38, 6), so sums and the negated sums of an erase cancel exactly
(a double would lose a small order next to a huge one); ingest bounds revenue to +-1e15, far
inside the 32 integer digits. Each revenue becomes its decimal as :data:`REVENUE_DECIMAL`: the
integer part exactly, the fraction rounded to millionths. (A plain ``revenue::DECIMAL(38, 6)``
is computed by DuckDB from the double product ``revenue * 1e6``, which is off by up to 0.07 near
1e15: 999999999999999.0 became 999999999999998.951424. Migration 10 recomputed the rollups
written that way.)

GDPR erase (:func:`forget_statements`) appends the negated contribution of the user's events
to ``rollup_daily`` and deletes their ``rollup_user_days`` rows, in the transaction that
deletes the events themselves (:meth:`avila.storage.base.Store.erase_users`). Readers check
that the rollup's event count over the days they use equals the events table's
(:mod:`avila.analytics.rollup_reads`), so a write that bypassed this module makes them read raw
rows instead of a wrong rollup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from avila.storage import user_history
from avila.storage.base import Statement

ROLLUP_DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS rollup_daily (project_id VARCHAR NOT NULL, day DATE NOT NULL,"
    " event_type VARCHAR NOT NULL, kind VARCHAR NOT NULL, value VARCHAR, events BIGINT NOT NULL,"
    " revenue DECIMAL(38, 6))",
    "CREATE TABLE IF NOT EXISTS rollup_user_days (project_id VARCHAR NOT NULL,"
    " day DATE NOT NULL, user_id VARCHAR NOT NULL, country VARCHAR, device_type VARCHAR,"
    " events BIGINT NOT NULL)",
)

#: A revenue double as DECIMAL(38, 6): the integer part exact (an integral double casts
#: exactly), the fraction ``revenue - trunc(revenue)`` (exact in a double) rounded to millionths
#: by DuckDB's cast. :func:`_micros` computes the same in Python.
REVENUE_DECIMAL = (
    "(CAST(trunc(revenue) AS DECIMAL(38, 0)) + CAST(revenue - trunc(revenue) AS DECIMAL(38, 6)))"
)

#: ``{src}``: a relation with the events table's columns (the rows being written).
DAILY_FROM = f"""
SELECT project_id, ts::DATE AS day, event_type, 'type' AS kind, NULL::VARCHAR AS value,
  count(*) AS events, sum({REVENUE_DECIMAL}) AS revenue FROM {{src}} GROUP BY ALL
UNION ALL
SELECT project_id, ts::DATE, event_type, 'url', url, count(*), NULL FROM {{src}}
WHERE url IS NOT NULL GROUP BY ALL
UNION ALL
SELECT project_id, ts::DATE, event_type, 'referrer', referrer, count(*), NULL FROM {{src}}
WHERE referrer IS NOT NULL GROUP BY ALL
"""
_USER_DAYS_FROM = """
SELECT project_id, ts::DATE AS day, user_id, country, device_type, count(*) AS events
FROM {src} GROUP BY ALL
"""

#: A user's key in ``rollup_user_days``: the MD5 of the id as a 128-bit number. Grouping 43 M
#: user days by it instead of the id string (which DuckDB decodes and hashes per row) made
#: 12-week retention 0.80x as long at 100 M events (benchmarks/RESULTS.md, "A stored user
#: key"). Users are told apart by the hash as ClickHouse's
#: ``uniqExact`` tells strings apart by SipHash-128: two of n ids share a key with probability
#: about n^2 / 2^129 (3 M users: 1e-26). Writers compute it in SQL (this expression over the
#: rows' ``user_id``), so every writer and the migration agree by construction; the column is NOT
#: NULL, so a writer that left it out fails instead of merging users. Readers take the stored
#: column, never a ``coalesce`` with the hash: that reads (and decodes) the id strings again
#: and gave back most of the gain.
USER_KEY = "md5_number(user_id)"
#: The user days with their key: what every writer appends (``{src}``: the events written).
_USER_DAYS_KEYED = f"SELECT *, {USER_KEY} AS user_key FROM ({_USER_DAYS_FROM})"


def _representable(src: str) -> str:
    """The rows of ``src`` whose revenue DECIMAL(38, 6) holds. The API bounds revenue to 1e15,
    but a direct store write (a migration, a test) may carry 1e308: such rows stay out of the
    rollups, so their days' counts disagree with the events table and readers take raw rows
    there (exact, only slower) instead of the write failing."""
    return f"(SELECT * FROM {src} WHERE revenue IS NULL OR abs(revenue) < 1e32)"


#: Migration 7: the tables, filled from the events already stored.
MIGRATION: tuple[str, ...] = (
    *ROLLUP_DDL,
    "INSERT INTO rollup_daily " + DAILY_FROM.format(src=_representable("events")),
    "INSERT INTO rollup_user_days " + _USER_DAYS_FROM.format(src=_representable("events")),
)

#: Migration 16: the table rebuilt with the key column, filled for the rows already stored
#: (a new table rather than ``ADD COLUMN`` and ``UPDATE``: DuckDB refuses ``SET NOT NULL`` after
#: an update in the same transaction). Skipped when the column is there: a store may apply a
#: version again (:func:`avila.storage.duckdb.migrations.migrate`).
_KEYED_USER_DAYS_DDL = (
    "CREATE TABLE {name} (project_id VARCHAR NOT NULL, day DATE NOT NULL,"
    " user_id VARCHAR NOT NULL, country VARCHAR, device_type VARCHAR, events BIGINT NOT NULL,"
    " user_key UHUGEINT NOT NULL)"
)


def add_user_key(cursor: Any) -> None:
    """Migration 16 (see :data:`USER_KEY`); call inside the migration's transaction."""
    (has,) = cursor.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'main'"
        " AND table_name = 'rollup_user_days' AND column_name = 'user_key'"
    ).fetchone()
    if has:
        return
    cursor.execute(_KEYED_USER_DAYS_DDL.format(name="_rollup_user_days_keyed"))
    cursor.execute(
        f"INSERT INTO _rollup_user_days_keyed SELECT *, {USER_KEY} FROM rollup_user_days"
    )
    cursor.execute("DROP TABLE rollup_user_days")
    cursor.execute("ALTER TABLE _rollup_user_days_keyed RENAME TO rollup_user_days")


#: Migration 10: the per-type rows (events and revenue) recomputed from the events with
#: :data:`REVENUE_DECIMAL`, one row per project, day and type, so that an erase (which negates
#: with the new cast) cancels what is stored. Rows by url and referrer hold no revenue.
REVENUE_MIGRATION: tuple[str, ...] = (
    "DELETE FROM rollup_daily WHERE kind = 'type'",
    "INSERT INTO rollup_daily SELECT project_id, ts::DATE, event_type, 'type', NULL,"
    f" count(*), sum({REVENUE_DECIMAL}) FROM {_representable('events')} GROUP BY ALL",
)


DAILY_SCHEMA = pa.schema(
    [
        ("project_id", pa.string()),
        ("day", pa.date32()),
        ("event_type", pa.string()),
        ("kind", pa.string()),
        ("value", pa.string()),
        ("events", pa.int64()),
        ("revenue", pa.decimal128(38, 6)),
    ]
)
USER_DAYS_SCHEMA = pa.schema(
    [
        ("project_id", pa.string()),
        ("day", pa.date32()),
        ("user_id", pa.string()),
        ("country", pa.string()),
        ("device_type", pa.string()),
        ("events", pa.int64()),
    ]
)
#: the rollup tables, in the order of :class:`Partials`
TABLES = ("rollup_daily", "rollup_user_days")
_COUNT: list[tuple[list[str], str]] = [([], "count_all")]


class Partials(NamedTuple):
    """One write's rows for ``rollup_daily`` and ``rollup_user_days``."""

    daily: pa.Table
    user_days: pa.Table


#: The largest revenue whose :data:`REVENUE_DECIMAL` :func:`_micros` reproduces (checked
#: against DuckDB in the tests; the API bounds revenue to this).
EXACT_REVENUE = 1e15


def _micros(revenue: float) -> int:
    """:data:`REVENUE_DECIMAL` of ``revenue`` as an integer of millionths: the integer part
    times a million, plus the fraction as DuckDB casts it (the double product by 1e6, rounded
    half away from zero); checked against DuckDB in the tests."""
    whole = math.trunc(revenue)
    scaled = (revenue - whole) * 1e6
    magnitude = abs(scaled)
    micros = math.floor(magnitude)
    if magnitude - micros >= 0.5:
        micros += 1
    return whole * 1_000_000 + (micros if scaled >= 0 else -micros)


#: Python's first and last dates as days since 1970-01-01 (date32's unit). Plain numbers, not
#: Arrow scalars: building one at import would import pandas into every process (pyarrow looks
#: for pandas the first time it converts a Python value).
_FIRST_DAY = (date(1, 1, 1) - date(1970, 1, 1)).days
_LAST_DAY = (date(9999, 12, 31) - date(1970, 1, 1)).days


def _python_dates(days: pa.ChunkedArray) -> bool:
    """Whether every day is within Python's dates (the partials become Python values). Ingest
    refuses event times outside them; before it did, one event at 0001-01-01T00:00:00+05:45
    (year 0 in UTC) made every loader round that held it fail, so nothing after it loaded."""
    low, high = pc.min_max(days).values()
    return bool(
        low.is_valid
        and low.cast(pa.int32()).as_py() >= _FIRST_DAY
        and high.cast(pa.int32()).as_py() <= _LAST_DAY
    )


def partials(events: pa.Table) -> Partials | None:
    """The partial aggregates of ``events`` (columns of the events table), exactly the rows
    ``DAILY_FROM`` and ``_USER_DAYS_FROM`` give over :func:`_representable` rows; None when a
    revenue is beyond :data:`EXACT_REVENUE` (write those with :func:`add_events`)."""
    revenue = events.column("revenue")
    if revenue.null_count < len(revenue):
        # NaN and infinities compare false here and in DuckDB alike: left out in both.
        keep = pc.or_kleene(pc.is_null(revenue), pc.less(pc.abs(revenue), 1e32))
        if not pc.all(keep).as_py():
            events = events.filter(keep)
            revenue = events.column("revenue")
        if (pc.max(pc.abs(revenue)).as_py() or 0) > EXACT_REVENUE:
            return None
    day = pc.cast(events.column("ts"), pa.date32())
    if len(day) and not _python_dates(day):
        return None  # a day Python's date cannot hold (year 0): DuckDB's SQL can
    keys = pa.table(
        {
            "project_id": events.column("project_id"),
            "day": day,
            "event_type": events.column("event_type"),
            "url": events.column("url"),
            "referrer": events.column("referrer"),
            "user_id": events.column("user_id"),
            "country": events.column("country"),
            "device_type": events.column("device_type"),
        }
    )
    type_key = ["project_id", "day", "event_type"]
    by_type = keys.group_by(type_key, use_threads=False).aggregate(_COUNT)
    sums: dict[tuple[Any, ...], int] = {}
    if revenue.null_count < len(revenue):
        paid = pa.table({**{k: keys.column(k) for k in type_key}, "r": revenue}).filter(
            pc.is_valid(revenue)
        )
        for project, d, etype, value in zip(*(c.to_pylist() for c in paid.columns), strict=True):
            key = (project, d, etype)
            sums[key] = sums.get(key, 0) + _micros(value)
    n = by_type.num_rows
    if sums:
        group_keys = zip(*(by_type.column(k).to_pylist() for k in type_key), strict=True)
        revenues = pa.array(
            [Decimal(sums[key]).scaleb(-6) if key in sums else None for key in group_keys],
            pa.decimal128(38, 6),
        )
    else:
        revenues = pa.nulls(n, pa.decimal128(38, 6))
    parts = [
        pa.Table.from_arrays(
            [
                *(by_type.column(k) for k in type_key),
                pa.array(["type"] * n, pa.string()),
                pa.nulls(n, pa.string()),
                by_type.column("count_all"),
                revenues,
            ],
            schema=DAILY_SCHEMA,
        )
    ]
    for kind in ("url", "referrer"):
        column = keys.column(kind)
        if column.null_count == len(column):
            continue
        rows = keys if column.null_count == 0 else keys.filter(pc.is_valid(column))
        counted = rows.group_by([*type_key, kind], use_threads=False).aggregate(_COUNT)
        m = counted.num_rows
        parts.append(
            pa.Table.from_arrays(
                [
                    *(counted.column(k) for k in type_key),
                    pa.array([kind] * m, pa.string()),
                    counted.column(kind),
                    counted.column("count_all"),
                    pa.nulls(m, pa.decimal128(38, 6)),
                ],
                schema=DAILY_SCHEMA,
            )
        )
    user_key = ["project_id", "day", "user_id", "country", "device_type"]
    users = keys.group_by(user_key, use_threads=False).aggregate(_COUNT)
    user_days = pa.Table.from_arrays(
        [*(users.column(k) for k in user_key), users.column("count_all")],
        schema=USER_DAYS_SCHEMA,
    )
    return Partials(pa.concat_tables(parts), user_days)


def add_events(cursor: Any, relation: str) -> None:
    """Append the partial aggregates of the rows in ``relation`` (a registered view or table
    name chosen by the caller, never user input) with SQL; call inside the writing
    transaction. For writes :func:`partials` cannot take."""
    rows = _representable(relation)
    cursor.execute("INSERT INTO rollup_daily " + DAILY_FROM.format(src=rows))
    # The user days once (an import's are millions of events), for the table and for the
    # per-user history's late rows.
    cursor.execute(
        "CREATE OR REPLACE TEMP TABLE _written_user_days AS " + _USER_DAYS_KEYED.format(src=rows)
    )
    try:
        cursor.execute("INSERT INTO rollup_user_days SELECT * FROM _written_user_days")
        user_history.add_late_sql(cursor, "_written_user_days")
    finally:
        cursor.execute("DROP TABLE IF EXISTS _written_user_days")


def add_partials(cursor: Any, found: Partials) -> None:
    """Append ``found`` (:func:`partials` of the rows being written); call inside the writing
    transaction."""
    daily, user_days = found
    if daily.num_rows:
        cursor.from_arrow(daily).insert_into("rollup_daily")
    if user_days.num_rows:
        keyed = cursor.from_arrow(user_days).project(f"*, {USER_KEY} AS user_key")
        keyed.insert_into("rollup_user_days")
        user_history.add_late(cursor, user_days, USER_KEY)


def forget_statements(project_id: str, user_ids: Sequence[str]) -> list[Statement]:
    """The statements that make the rollups forget ``user_ids``: run them in the transaction
    that deletes their events, before the delete (they read the events)."""
    marks = ", ".join("?" for _ in user_ids)
    mine = _representable(f"(SELECT * FROM events WHERE project_id = ? AND user_id IN ({marks}))")
    return [
        (
            "INSERT INTO rollup_daily SELECT project_id, day, event_type, kind, value, -events,"
            f" -revenue FROM ({DAILY_FROM.format(src=mine)})",
            [project_id, *user_ids] * 3,
        ),
        (
            f"DELETE FROM rollup_user_days WHERE project_id = ? AND user_id IN ({marks})",
            [project_id, *user_ids],
        ),
        *user_history.forget_statements(project_id, user_ids, USER_KEY),
    ]


# -- compaction ------------------------------------------------------------------------------
# Every write appends its own partial rows, so a day written by many small loader rounds holds
# a row per key per round: at a trickle, about as many rows as events, and the readers' sums
# cost what raw rows cost. Compaction replaces a day's rows of one table by their sums per key
# (as a SummingMergeTree merge does), in one transaction: every sum a reader takes is the same
# before and after, and keys whose events sum to zero (erased) are dropped.

#: Migration 14: rows per table and day right after the day's last compaction (or, for a day
#: first seen, its distinct keys then: the rows a compaction would have left), the baseline its
#: growth is measured from.
COMPACTIONS_DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS rollup_compactions (table_name VARCHAR NOT NULL,"
    " day DATE NOT NULL, row_count BIGINT NOT NULL, PRIMARY KEY (table_name, day))",
)
#: A day is compacted once it holds this many times its baseline rows ...
COMPACT_GROWTH = 2
#: ... and at least this many rows more (small days are cheap to read as they are).
COMPACT_MIN_ROWS = 1000
#: A finished day (before yesterday, UTC: its on-time events are in) is compacted once it holds
#: this many times its baseline rows (and COMPACT_MIN_ROWS more). Doubling is the right price
#: while a day still fills, but a day ends somewhere between one and two times its keys and is
#: read in that shape by every report over history: at 100 M events, 18 % extra user-day rows
#: cost retention 14 % (benchmarks/RESULTS.md, "Finished days compacted").
FINISHED_GROWTH = 1.1
#: Per table: the key columns its partial rows are summed over (its schema's columns but the
#: summed ones, in the table's order; names from this module, never from a caller).
_KEYS = {
    name: ", ".join(c for c in schema.names if c not in ("events", "revenue"))
    for name, schema in (("rollup_daily", DAILY_SCHEMA), ("rollup_user_days", USER_DAYS_SCHEMA))
}
#: Per table: the sums of a key's rows, in the table's column order after the keys (the user
#: key is the user id's, the same on every row of a key).
_SUMS = {
    "rollup_daily": "sum(events), sum(revenue)",
    "rollup_user_days": "sum(events), any_value(user_key)",
}
_ROWS_PER_DAY = """
WITH n AS (
  SELECT 'rollup_daily' AS table_name, day, count(*) AS row_count FROM rollup_daily GROUP BY day
  UNION ALL
  SELECT 'rollup_user_days', day, count(*) FROM rollup_user_days GROUP BY day
)
SELECT n.table_name, n.day, n.row_count, c.row_count FROM n
LEFT JOIN rollup_compactions c ON c.table_name = n.table_name AND c.day = n.day
ORDER BY n.day DESC
"""
_KEYS_PER_DAY = (
    "SELECT day, count(DISTINCT ({keys})) FROM {table} WHERE day IN ({days}) GROUP BY day"
)


def _grown(rows: int, baseline: int, finished: bool) -> bool:
    growth = FINISHED_GROWTH if finished else COMPACT_GROWTH
    return rows >= growth * baseline and rows - baseline >= COMPACT_MIN_ROWS


def _today() -> date:
    """The UTC date (a function, so tests can move the clock)."""
    return datetime.now(UTC).date()


def finished_before() -> date:
    """Days before this one (UTC) are finished: their on-time events are in (the daily rollups'
    compaction and the events' order, :mod:`avila.storage.event_order`, treat them alike)."""
    return _today() - timedelta(days=1)


class Due(NamedTuple):
    """:func:`due_compactions`' answer."""

    #: (table, day) pairs to compact, oldest day first
    pairs: list[tuple[str, date]]
    #: (table, day, distinct keys) of the days seen for the first time: their baselines
    baselines: list[tuple[str, date, int]]


#: Rows of days first seen whose keys one look counts, per table (newest day first; at least
#: one day): at 100 M events a store upgraded to migration 14 would otherwise count all its
#: 50 M user-day rows in one look (11 s); 1 M rows take ~0.4 s.
FIRST_SIGHT_ROWS = 1_000_000


def due_compactions(cursor: Any) -> Due:
    """The (table, day) pairs whose rows grew past the rule above since their baseline (for a
    day before yesterday, UTC, :data:`FINISHED_GROWTH` instead of doubling). A day
    seen for the first time (a new day, or every day of a store from before migration 14) gets
    its distinct keys as baseline (the caller records them: :func:`record_baselines`) and is
    due at once if its rows are already past the rule. Only reads: run it outside the write
    transaction (a first sight scans the day's rows); days are first seen newest first, up to
    :data:`FIRST_SIGHT_ROWS` rows per table per call (at least a day), the rest on later calls."""
    pairs: list[tuple[str, date]] = []
    unseen: dict[str, dict[date, int]] = {}
    finished = finished_before()
    for table, day, rows, baseline in cursor.execute(_ROWS_PER_DAY).fetchall():
        if baseline is None:
            counted = unseen.setdefault(table, {})
            if not counted or sum(counted.values()) + rows <= FIRST_SIGHT_ROWS:
                counted[day] = rows
        elif _grown(rows, baseline, day < finished):
            pairs.append((table, day))
    baselines: list[tuple[str, date, int]] = []
    for table, rows_of in unseen.items():
        marks = ", ".join("?" for _ in rows_of)
        sql = _KEYS_PER_DAY.format(keys=_KEYS[table], table=table, days=marks)
        for day, distinct in cursor.execute(sql, list(rows_of)).fetchall():
            baselines.append((table, day, int(distinct)))
            if _grown(rows_of[day], distinct, day < finished):
                pairs.append((table, day))
    return Due(sorted(pairs, key=lambda pair: (pair[1], pair[0])), baselines)


def record_baselines(cursor: Any, baselines: Sequence[tuple[str, date, int]]) -> None:
    """Store :attr:`Due.baselines`; call inside a write transaction."""
    if baselines:
        cursor.executemany("INSERT OR REPLACE INTO rollup_compactions VALUES (?, ?, ?)", baselines)


def compact(cursor: Any, table: str, day: date) -> int:
    """Replace ``table``'s rows of ``day`` by their sums per key (see above) and record the
    new baseline; the rows left. Call inside a write transaction."""
    cursor.execute(
        f"CREATE OR REPLACE TEMP TABLE _compacted AS SELECT {_KEYS[table]}, {_SUMS[table]}"
        f" FROM {table} WHERE day = ? GROUP BY ALL HAVING sum(events) <> 0",
        [day],
    )
    cursor.execute(f"DELETE FROM {table} WHERE day = ?", [day])
    cursor.execute(f"INSERT INTO {table} SELECT * FROM _compacted")
    ((rows,),) = cursor.execute("SELECT count(*) FROM _compacted").fetchall()
    cursor.execute("DROP TABLE _compacted")
    cursor.execute("INSERT OR REPLACE INTO rollup_compactions VALUES (?, ?, ?)", [table, day, rows])
    return int(rows)
