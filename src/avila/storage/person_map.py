"""The materialised person map: every id that identity links resolve, and the person it resolves to.

``person_map (project_id, anonymous_id, user_id)`` holds exactly the rows of the
``identity_resolved`` view (:mod:`avila.identity` gives the rules: earliest link wins, chains up
to :data:`~avila.identity.MAX_CHAIN` hops), kept as a table so that the ``events_resolved`` view
is a plain hash join against it instead of a recursive walk over the links on every query
(benchmarks/RESULTS.md, "Funnel modes and the stitched overview"). ``anonymous_id`` is an
event's ``user_id`` as sent; ``user_id`` is the person it counts as. Ids without links have no
row (they are their own person).

**Kept up to date where links are written**, in the same transaction as the links
(:func:`links_added`: the ingest log's loader, ``avila import``; :func:`append_links`: the
store's ``append_table``), so the map is exactly as crash-safe as the links. New links change
the earliest link of their ``anonymous_id`` s (a late link with an earlier ``ts`` replaces the
old one; a link may join two persons); every id whose chain passes through a changed id within
``MAX_CHAIN`` hops is *affected*: its row is deleted and recomputed by the very walk of
``identity_resolved``, seeded with the affected ids only. GDPR erase deletes links;
:func:`rebuild` then recomputes the project's whole map.

**Checked on every read.** ``person_map_state`` records, per project, a fingerprint (row count
and sum of row hashes) of the project's ``identities`` and of its ``person_map`` rows as of the
last maintenance. The backend's ``stitching_probe`` recomputes both and reads through the map
only when they match; otherwise (a write that bypassed this module, such as a hand-made
``INSERT``, or a crash inside an erase) it reads through ``events_resolved_live``, the
recursive view, which is exact but slower. The next maintenance of the project (any new link,
an erase) finds the mismatch and rebuilds the project's map. The fingerprints are additive, so
"the state matched before this write" is checked without a second scan.

DuckDB only. The ClickHouse backend keeps its recursive ``events_resolved`` view.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from avila.identity import IDENTITIES_TABLE, MAX_CHAIN
from avila.storage.base import Store

#: Migration 8's tables, filled from the links already stored (the map of a store that
#: already has links is backfilled here).
DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS person_map (project_id VARCHAR NOT NULL,"
    " anonymous_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL)",
    "CREATE TABLE IF NOT EXISTS person_map_state (project_id VARCHAR NOT NULL,"
    " links BIGINT NOT NULL, links_hash HUGEINT NOT NULL, persons BIGINT NOT NULL,"
    " persons_hash HUGEINT NOT NULL)",
    # The recursive resolution, for reads while a project's map is not current.
    "CREATE OR REPLACE VIEW events_resolved_live AS SELECT e.* REPLACE"
    " (coalesce(r.user_id, e.user_id) AS user_id) FROM events e LEFT JOIN identity_resolved r"
    " ON r.project_id = e.project_id AND r.anonymous_id = e.user_id",
    "INSERT INTO person_map SELECT project_id, anonymous_id, user_id FROM identity_resolved",
    "INSERT INTO person_map_state SELECT l.project_id, l.n, l.h, coalesce(m.n, 0),"
    " coalesce(m.h, 0) FROM (SELECT project_id, count(*) AS n,"
    " sum(hash(anonymous_id, user_id, ts, received_at)) AS h FROM identities GROUP BY ALL) l"
    " LEFT JOIN (SELECT project_id, count(*) AS n, sum(hash(anonymous_id, user_id)) AS h"
    " FROM person_map GROUP BY ALL) m USING (project_id)",
    "CREATE OR REPLACE VIEW events_resolved AS SELECT e.* REPLACE"
    " (coalesce(m.user_id, e.user_id) AS user_id) FROM events e LEFT JOIN person_map m"
    " ON m.project_id = e.project_id AND m.anonymous_id = e.user_id",
)

#: One project's links fingerprint (parameter: project_id); the hash covers what resolution
#: reads (ids, ts, received_at).
_LINKS_FP = (
    "SELECT count(*), coalesce(sum(hash(anonymous_id::VARCHAR, user_id::VARCHAR,"
    " ts::TIMESTAMP, received_at::TIMESTAMP)), 0) FROM {src} WHERE project_id = ?"
)
_MAP_FP = (
    "SELECT count(*), coalesce(sum(hash(anonymous_id, user_id)), 0) FROM person_map"
    " WHERE project_id = ?"
)

#: Whether the project has links (no row: none) and its map is current (parameter: project_id).
PROBE = (
    "WITH p AS (SELECT ?::VARCHAR AS id), l AS (SELECT count(*) AS n,"
    " coalesce(sum(hash(anonymous_id, user_id, ts, received_at)), 0) AS h FROM identities"
    " WHERE project_id = (SELECT id FROM p)), m AS (SELECT count(*) AS n,"
    " coalesce(sum(hash(anonymous_id, user_id)), 0) AS h FROM person_map"
    " WHERE project_id = (SELECT id FROM p))"
    " SELECT coalesce((SELECT s.links = l.n AND s.links_hash = l.h AND s.persons = m.n"
    " AND s.persons_hash = m.h FROM person_map_state s WHERE s.project_id = (SELECT id FROM p)"
    " LIMIT 1), false) FROM l, m WHERE l.n > 0"
)

# The walk of identity_resolved (avila.storage.duckdb.migrations) over one project's links,
# started from the ids {seed} admits: the same earliest-link rule, the same hop limit, so the
# rows are exactly the view's rows for those ids.
_LINKS_CTE = (
    "links AS MATERIALIZED (SELECT anonymous_id, arg_min(user_id, (ts, received_at, user_id))"
    " AS user_id FROM identities WHERE project_id = $project AND anonymous_id <> user_id"
    " GROUP BY anonymous_id)"
)
_WALK = (
    "WITH RECURSIVE " + _LINKS_CTE + ", walk(anonymous_id, user_id, depth) AS ("
    " SELECT anonymous_id, user_id, 1 FROM links WHERE {seed} UNION ALL"
    " SELECT w.anonymous_id, l.user_id, w.depth + 1 FROM walk w JOIN links l"
    f" ON l.anonymous_id = w.user_id WHERE w.depth < {MAX_CHAIN})"
    " SELECT $project AS project_id, anonymous_id, arg_max(user_id, depth) AS user_id"
    " FROM walk GROUP BY anonymous_id"
)
# The changed ids and every id whose chain reaches one within MAX_CHAIN hops (its resolution
# reads the changed id's link): walked backwards over the links.
_AFFECTED = (
    "WITH RECURSIVE " + _LINKS_CTE + ", up(anonymous_id, depth) AS ("
    " SELECT DISTINCT anonymous_id, 0 FROM _person_map_changed WHERE project_id = $project"
    " UNION SELECT l.anonymous_id, u.depth + 1 FROM up u JOIN links l"
    f" ON l.user_id = u.anonymous_id WHERE u.depth < {MAX_CHAIN})"
    " SELECT DISTINCT anonymous_id FROM up"
)
_SET_STATE = (
    "INSERT INTO person_map_state SELECT $project, l.n, l.h, m.n, m.h FROM ("
    + _LINKS_FP.format(src=IDENTITIES_TABLE).replace("?", "$project")
    + ") l(n, h), ("
    + _MAP_FP.replace("?", "$project")
    + ") m(n, h)"
)


def links_added(cursor: Any, links: pa.Table) -> None:
    """Bring the map up to date with ``links``, already inserted into ``identities`` in the
    caller's open transaction on ``cursor`` (a DuckDB connection)."""
    if links.num_rows == 0:
        return
    cursor.register("_person_map_changed", links)
    try:
        for (project,) in cursor.execute(
            "SELECT DISTINCT project_id FROM _person_map_changed"
        ).fetchall():
            _update_project(cursor, project)
    finally:
        cursor.unregister("_person_map_changed")


def append_links(cursor: Any, links: pa.Table) -> None:
    """Insert ``links`` into ``identities`` and update the map, in one transaction."""
    cursor.execute("BEGIN TRANSACTION").fetchall()
    try:
        cursor.from_arrow(links).insert_into(IDENTITIES_TABLE)
        links_added(cursor, links)
        cursor.execute("COMMIT").fetchall()
    except BaseException:
        cursor.execute("ROLLBACK").fetchall()
        raise


def _update_project(cursor: Any, project: str) -> None:
    p = {"project": project}
    stored = cursor.execute(
        "SELECT links, links_hash, persons, persons_hash FROM person_map_state"
        " WHERE project_id = $project",
        p,
    ).fetchall()
    now = cursor.execute(_LINKS_FP.format(src=IDENTITIES_TABLE), [project]).fetchall()[0]
    new = cursor.execute(_LINKS_FP.format(src="_person_map_changed"), [project]).fetchall()[0]
    persons = cursor.execute(_MAP_FP, [project]).fetchall()[0]
    before = (now[0] - new[0], now[1] - new[1], persons[0], persons[1])
    if len(stored) == 1 and tuple(int(v) for v in stored[0]) == before:
        affected = cursor.sql(_AFFECTED, params=p).to_arrow_table()
        cursor.register("_person_map_affected", affected)
        try:
            mine = "anonymous_id IN (SELECT anonymous_id FROM _person_map_affected)"
            _run(cursor, f"DELETE FROM person_map WHERE project_id = $project AND {mine}", p)
            _run(cursor, "INSERT INTO person_map " + _WALK.format(seed=mine), p)
        finally:
            cursor.unregister("_person_map_affected")
    else:
        # The map was not current before this write: recompute all of the project.
        _run(cursor, "DELETE FROM person_map WHERE project_id = $project", p)
        _run(cursor, "INSERT INTO person_map " + _WALK.format(seed="true"), p)
    _run(cursor, "DELETE FROM person_map_state WHERE project_id = $project", p)
    _run(cursor, _SET_STATE, p)


def _run(cursor: Any, sql: str, params: dict[str, Any]) -> None:
    # fetched to the end: DuckDB refuses other work on a connection with an unfinished result
    cursor.execute(sql, params).fetchall()


def rebuild(store: Store, project_id: str) -> None:
    """Recompute ``project_id``'s map through ``store``'s one-statement writes (GDPR erase,
    which deletes links). Safe against a concurrent :func:`links_added` and a crash between the
    statements: the state row goes first, so reads take the live view until the last statement
    records the fingerprints; links written meanwhile make the fingerprints disagree (live view
    again) or record their own state, which this then leaves alone."""
    if store.backend != "duckdb":
        return
    store.execute("DELETE FROM person_map_state WHERE project_id = ?", [project_id])
    links, links_hash = store.query(_LINKS_FP.format(src=IDENTITIES_TABLE), [project_id])[0]
    store.execute("DELETE FROM person_map WHERE project_id = ?", [project_id])
    walk = _WALK.format(seed="true").replace("$project", "$1")
    store.execute("INSERT INTO person_map " + walk, [project_id])
    store.execute(
        "INSERT INTO person_map_state SELECT $1, $2, $3::HUGEINT, m.n, m.h FROM ("
        + _MAP_FP.replace("?", "$1")
        + ") m(n, h) WHERE NOT EXISTS (SELECT 1 FROM person_map_state WHERE project_id = $1)",
        [project_id, int(links), str(int(links_hash))],
    )
