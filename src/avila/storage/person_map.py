"""The materialised person map: every id that identity links resolve, and the person it resolves to.

``person_map (project_id, anonymous_id, user_id)`` holds exactly the rows of the
``identity_resolved`` view (:mod:`avila.identity` gives the rules: earliest link wins, the
latest link of a cycle is not followed, chains up to :data:`~avila.identity.MAX_CHAIN` hops),
kept as a table so that the ``events_resolved`` view is a plain hash join against it instead
of a recursive walk over the links on every query (benchmarks/RESULTS.md, "Funnel modes and
the stitched overview"). ``anonymous_id`` is an
event's ``user_id`` as sent; ``user_id`` is the person it counts as. Ids without links have no
row (they are their own person).

**Kept up to date where links are written**, in the same transaction as the links
(:func:`links_added`: the ingest log's loader, ``avila import``; :func:`append_links`: the
store's ``append_table``), so the map is exactly as crash-safe as the links. New links change
the earliest link of their ``anonymous_id`` s (a late link with an earlier ``ts`` replaces the
old one; a link may join two persons, or close or dissolve a cycle); every id whose resolution
reads a changed id's link is *affected*: its walk reads the links up to ``MAX_CHAIN - 1`` hops
on, and whether each of those is followed (the cycle rule) reads the links of its cycle, up to
``MAX_CHAIN - 1`` hops further, so the affected ids are those within ``2 * MAX_CHAIN`` hops
upstream of a changed id (found walking the stored links backwards). Their rows are deleted and
recomputed by the very resolution of ``identity_resolved``, seeded with the affected ids and
reading only the links within ``2 * MAX_CHAIN`` hops of them, so a write costs in proportion
to the part of the link graph it touches (plus a few scans of the project's links), not to the
project's whole map. GDPR erase deletes links and recomputes the project's whole map in the same
transaction (:func:`rebuild_statements`).

**Checked on every read.** ``person_map_state`` records, per project, how many ``identities``
rows and how many ``person_map`` rows there were after the last maintenance. The backend's
``stitching_probe`` counts both and reads through the map only when they match; otherwise (a
write that bypassed this module, such as a hand-made ``INSERT``, or a crash inside an erase)
it reads through ``events_resolved_live``, the recursive view, which is exact but slower. The
next maintenance of the project (any new link, an erase) finds the mismatch and rebuilds the
project's map. Counts, not content hashes: hashing every link on every read cost ~15 ms of CPU
per probe at 55,000 links (growing with the links), and every writer of Avila's own either
maintains the map or changes the counts; a hand-made write that keeps both counts (an
``UPDATE`` of ``identities``) is not noticed: call :func:`rebuild` after one.

DuckDB only. The ClickHouse backend keeps its recursive ``events_resolved`` view.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from avila.identity import IDENTITIES_TABLE, MAX_CHAIN
from avila.storage.base import Statement, Store

# Every project's map and counts from the stored links, through identity_resolved.
_BACKFILL = (
    "INSERT INTO person_map SELECT project_id, anonymous_id, user_id FROM identity_resolved",
    "INSERT INTO person_map_state SELECT l.project_id, l.n, coalesce(m.n, 0) FROM"
    " (SELECT project_id, count(*) AS n FROM identities GROUP BY ALL) l LEFT JOIN"
    " (SELECT project_id, count(*) AS n FROM person_map GROUP BY ALL) m USING (project_id)",
)

#: Migration 8's tables, filled from the links already stored (the map of a store that
#: already has links is backfilled here).
DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS person_map (project_id VARCHAR NOT NULL,"
    " anonymous_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL)",
    "CREATE TABLE IF NOT EXISTS person_map_state (project_id VARCHAR NOT NULL,"
    " links BIGINT NOT NULL, persons BIGINT NOT NULL)",
    # The recursive resolution, for reads while a project's map is not current.
    "CREATE OR REPLACE VIEW events_resolved_live AS SELECT e.* REPLACE"
    " (coalesce(r.user_id, e.user_id) AS user_id) FROM events e LEFT JOIN identity_resolved r"
    " ON r.project_id = e.project_id AND r.anonymous_id = e.user_id",
    *_BACKFILL,
    "CREATE OR REPLACE VIEW events_resolved AS SELECT e.* REPLACE"
    " (coalesce(m.user_id, e.user_id) AS user_id) FROM events e LEFT JOIN person_map m"
    " ON m.project_id = e.project_id AND m.anonymous_id = e.user_id",
)

#: Every project's map recomputed from its links by the current ``identity_resolved`` (after a
#: migration that changed the resolution, such as migration 11's cycle rule).
RECOMPUTE_ALL: tuple[str, ...] = (
    "DELETE FROM person_map",
    "DELETE FROM person_map_state",
    *_BACKFILL,
)

#: Whether the project has links (no row: none) and its map is current (parameter: project_id).
PROBE = (
    "WITH p AS (SELECT ?::VARCHAR AS id),"
    " l AS (SELECT count(*) AS n FROM identities WHERE project_id = (SELECT id FROM p)),"
    " m AS (SELECT count(*) AS n FROM person_map WHERE project_id = (SELECT id FROM p))"
    " SELECT coalesce((SELECT s.links = l.n AND s.persons = m.n FROM person_map_state s"
    " WHERE s.project_id = (SELECT id FROM p) LIMIT 1), false) FROM l, m WHERE l.n > 0"
)

# The resolution of identity_resolved (avila.storage.duckdb.migrations, migration 11) over one
# project's links, started from the ids {seed} admits: the same earliest links, the same cycle
# rule, the same hop limit, so the rows are exactly the view's rows for those ids. {only} limits
# the links read to the ids the walk can visit. ``ring`` walks from every id that has a link and
# is linked to (only those can be on a cycle) until it is back or MAX_CHAIN links on; an id back
# at itself is on a cycle of at most MAX_CHAIN links, whose ids are the ``cur`` it passed, and
# its link is not followed when it is the latest of the cycle's links (keys (ts, received_at,
# user_id) are distinct within a cycle: each id of it is the user_id of exactly one of them).
_WALK = (
    "WITH RECURSIVE {reach}links AS MATERIALIZED (SELECT anonymous_id,"
    " arg_min(user_id, (ts, received_at, user_id)) AS user_id,"
    " min((ts, received_at, user_id)) AS k FROM identities"
    " WHERE project_id = $project AND anonymous_id <> user_id{only} GROUP BY anonymous_id),"
    " ring(start, cur, depth) AS ("
    " SELECT anonymous_id, user_id, 1 FROM links"
    " WHERE anonymous_id IN (SELECT user_id FROM links) UNION ALL"
    " SELECT r.start, l.user_id, r.depth + 1 FROM ring r JOIN links l ON l.anonymous_id = r.cur"
    f" WHERE r.depth < {MAX_CHAIN} AND r.cur <> r.start),"
    " kept AS MATERIALIZED (SELECT anonymous_id, user_id FROM links WHERE anonymous_id NOT IN"
    " (SELECT r.start FROM ring r JOIN links l ON l.anonymous_id = r.cur GROUP BY r.start"
    " HAVING bool_or(r.cur = r.start) AND arg_max(r.cur, l.k) = r.start)),"
    " walk(anonymous_id, user_id, depth) AS ("
    " SELECT anonymous_id, user_id, 1 FROM kept WHERE {seed} UNION ALL"
    " SELECT w.anonymous_id, l.user_id, w.depth + 1 FROM walk w JOIN kept l"
    f" ON l.anonymous_id = w.user_id WHERE w.depth < {MAX_CHAIN})"
    " SELECT $project AS project_id, anonymous_id, arg_max(user_id, depth) AS user_id"
    " FROM walk GROUP BY anonymous_id"
)
_WHOLE_PROJECT = _WALK.format(reach="", only="", seed="true")
#: How far a changed link reaches: an id's walk reads the links of the ids up to MAX_CHAIN - 1
#: hops on, and whether each of those links is followed reads the links of its cycle, up to
#: MAX_CHAIN - 1 hops further: so an id's resolution reads links up to 2 * MAX_CHAIN - 2 hops
#: on (a late link dissolving or closing a cycle 14 hops downstream moves the start of a chain).
_RADIUS = 2 * MAX_CHAIN
# The ids within _RADIUS hops downstream of the affected ones, over every stored link (a
# superset of the earliest links the walk follows).
_REACH = (
    "reach(anonymous_id, depth) AS (SELECT anonymous_id, 0 FROM _person_map_affected"
    " UNION SELECT i.user_id, r.depth + 1 FROM reach r JOIN identities i"
    " ON i.project_id = $project AND i.anonymous_id = r.anonymous_id"
    f" WHERE r.depth < {_RADIUS}), "
)
_AFFECTED_ONLY = "anonymous_id IN (SELECT anonymous_id FROM _person_map_affected)"
_SUBGRAPH = _WALK.format(
    reach=_REACH,
    only=" AND anonymous_id IN (SELECT anonymous_id FROM reach)",
    seed=_AFFECTED_ONLY,
)
# The changed ids and every id whose resolution can read a changed id's link (within _RADIUS
# hops upstream): walked backwards over every stored link (a superset: recomputing an id that
# did not change is harmless).
_AFFECTED = (
    "WITH RECURSIVE up(anonymous_id, depth) AS ("
    " SELECT DISTINCT anonymous_id, 0 FROM _person_map_changed WHERE project_id = $project"
    " UNION SELECT i.anonymous_id, u.depth + 1 FROM up u JOIN identities i"
    " ON i.project_id = $project AND i.user_id = u.anonymous_id"
    f" WHERE u.depth < {_RADIUS}) SELECT DISTINCT anonymous_id FROM up"
)
_COUNTS = (
    "SELECT (SELECT count(*) FROM identities WHERE project_id = $project),"
    " (SELECT count(*) FROM _person_map_changed WHERE project_id = $project),"
    " (SELECT count(*) FROM person_map WHERE project_id = $project)"
)
_SET_STATE = (
    "INSERT INTO person_map_state SELECT $project,"
    " (SELECT count(*) FROM identities WHERE project_id = $project),"
    " (SELECT count(*) FROM person_map WHERE project_id = $project)"
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
    """Insert ``links`` into ``identities`` (by column name; the caller has checked the names
    against the catalog) and update the map, in one transaction."""
    columns = ", ".join(f'"{name}"' for name in links.column_names)
    cursor.execute("BEGIN TRANSACTION").fetchall()
    try:
        cursor.register("_person_map_incoming", links)
        try:
            cursor.execute(
                f"INSERT INTO {IDENTITIES_TABLE} ({columns})"
                f" SELECT {columns} FROM _person_map_incoming"
            ).fetchall()
        finally:
            cursor.unregister("_person_map_incoming")
        links_added(cursor, links)
        cursor.execute("COMMIT").fetchall()
    except BaseException:
        cursor.execute("ROLLBACK").fetchall()
        raise


def _update_project(cursor: Any, project: str) -> None:
    p = {"project": project}
    stored = cursor.execute(
        "SELECT links, persons FROM person_map_state WHERE project_id = $project", p
    ).fetchall()
    links, new, persons = cursor.execute(_COUNTS, p).fetchall()[0]
    if len(stored) == 1 and tuple(stored[0]) == (links - new, persons):
        affected = cursor.sql(_AFFECTED, params=p).to_arrow_table()
        cursor.register("_person_map_affected", affected)
        try:
            _run(
                cursor,
                f"DELETE FROM person_map WHERE project_id = $project AND {_AFFECTED_ONLY}",
                p,
            )
            _run(cursor, "INSERT INTO person_map " + _SUBGRAPH, p)
        finally:
            cursor.unregister("_person_map_affected")
    else:
        # The map was not current before this write: recompute all of the project.
        _run(cursor, "DELETE FROM person_map WHERE project_id = $project", p)
        _run(cursor, "INSERT INTO person_map " + _WHOLE_PROJECT, p)
    _run(cursor, "DELETE FROM person_map_state WHERE project_id = $project", p)
    _run(cursor, _SET_STATE, p)


def _run(cursor: Any, sql: str, params: dict[str, Any]) -> None:
    # fetched to the end: DuckDB refuses other work on a connection with an unfinished result
    cursor.execute(sql, params).fetchall()


def rebuild_statements(project_id: str) -> list[Statement]:
    """Recompute ``project_id``'s whole map from its stored links and record its counts: run
    them in the transaction that changed the links (GDPR erase, :meth:`Store.erase_users`), so
    the map is never stale after a crash there."""
    return [
        ("DELETE FROM person_map_state WHERE project_id = $1", [project_id]),
        ("DELETE FROM person_map WHERE project_id = $1", [project_id]),
        ("INSERT INTO person_map " + _WHOLE_PROJECT.replace("$project", "$1"), [project_id]),
        (_SET_STATE.replace("$project", "$1"), [project_id]),
    ]


def rebuild(store: Store, project_id: str) -> None:
    """Recompute ``project_id``'s map in one transaction (after a hand-made write to
    ``identities`` that kept both counts, see the module docstring)."""
    if store.backend != "duckdb":
        return
    store.execute_all(rebuild_statements(project_id))
