"""User paths: the top journeys from a start event and/or to an end event, as a Sankey.

Semantics: a user's events in ``[start_time, end_time)`` (after ``filters``, and only of the
``include`` types when given) are ordered by time, equal times by name. Each event is named
``<type>:<key>`` where the type has a key field that identifies a place or thing
(``page_view:/pricing``, ``click:/cart``, ``product_view:p1``, ``add_to_cart:p1``,
``remove_from_cart:p1``, ``custom:signup_done``) and ``<type>`` otherwise (``purchase``,
``search``, ``login``: order ids and search texts are too many to draw). Per user, one path:

* it begins at the user's **first** event matching ``start`` (without ``start``: their first
  event in range);
* with ``end`` it stops at the first event matching ``end`` at or after the beginning; users
  with no such event have no path;
* repeated consecutive names are collapsed into one step (a reload, a duplicate delivery);
* it keeps ``steps`` steps: the first ones, or, with ``end`` but no ``start``, the last ones, so
  every path ends at step ``steps`` on the end event (shorter paths start at a later step). With
  both ``start`` and ``end``, only users who got from start to end within ``steps`` steps count.

``nodes`` are ``{"id", "step", "name", "users"}``: users whose path has that name at that step
(1-based). ``links`` are ``{"source", "target", "users"}`` between node ids of consecutive steps.
Per step the ``limit_per_step`` names with most users are kept (ties: by name) and the rest
are merged into one ``"Other"`` node, links included. ``users`` is the number of paths. Node
ids are ``"<step>:<name>"``.

Everything up to the per-step counts runs in SQL: the range scan, the start/end cut (by
aggregates, not windows), then one window pass (``lag``, ``lead``, row number). For a user with
no repeated consecutive name that pass already gives each step and its successor; only users
with repeats go through a second pass over their collapsed rows, cut at ``steps`` plus their
number of repeats (later rows cannot be among the first ``steps`` steps). The window sort is
the cost (about 1 CPU-second per 2.5 M rows here); see benchmarks/RESULTS.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from avila.analytics.common import (
    CONDITION_TYPES,
    KEY_FIELDS,
    OTHER,
    condition_expr,
    events_source,
    fragments,
    invalid,
    time_range,
    where_clause,
)
from avila.analytics.query import parse_explained
from avila.schemas.analytics import PathsQuery
from avila.storage.base import Store

#: Event types named with their key field, and that field.
NAME_KEYS: dict[str, str] = {
    t: KEY_FIELDS[t]
    for t in ("page_view", "click", "product_view", "add_to_cart", "remove_from_cart", "custom")
}


def name_expr() -> tuple[str, list[Any]]:
    """SQL naming an event ``<type>:<key>`` or ``<type>`` (see the module docstring)."""
    by_column: dict[str, list[str]] = defaultdict(list)
    for event_type, column in NAME_KEYS.items():
        by_column[column].append(event_type)
    whens, params = [], []
    for column, types in by_column.items():
        marks = ", ".join("?" for _ in types)
        whens.append(
            f"WHEN event_type IN ({marks}) THEN event_type || ':' || coalesce({column}, '')"
        )
        params.extend(types)
    return f"(CASE {' '.join(whens)} ELSE event_type END)", params


def paths(store: Store, project_id: str, query: PathsQuery | Mapping[str, Any]) -> dict[str, Any]:
    """``{"steps", "users", "nodes": [{"id", "step", "name", "users"}], "links": [{"source",
    "target", "users"}]}`` for ``project_id`` (see the module docstring)."""
    q = parse_explained(PathsQuery, query)
    start, end = time_range(q.start_time, q.end_time)
    for i, event_type in enumerate(q.include):
        if event_type not in CONDITION_TYPES:
            raise invalid(
                "unknown_event_type",
                f"include[{i}]",
                f"unknown event type {event_type!r}; expected one of "
                + ", ".join(sorted(CONDITION_TYPES)),
            )
    start_c = condition_expr(store, q.start, "start") if q.start else None
    end_c = condition_expr(store, q.end, "end") if q.end else None
    where = where_clause(store, project_id, start, end, q.filters)
    name_sql, name_params = name_expr()
    frag = fragments(store)

    select = f"user_id, {frag['epoch_us'].format('ts')} AS t, {name_sql} AS name"
    params: list[Any] = [*name_params]
    for flag, cond in (("s", start_c), ("e", end_c)):
        if cond is not None:
            select += f", {cond.sql} AS {flag}"
            params.extend(cond.params)
    sql_where = where.sql
    params.extend(where.params)
    if q.include:
        sql_where += f" AND event_type IN ({', '.join('?' for _ in q.include)})"
        params.extend(q.include)
    ctes = [f"ev AS (SELECT {select} FROM {events_source(store, project_id)} WHERE {sql_where})"]
    rows = "ev"
    if start_c is not None:  # from the first start event on (ties ordered by name)
        ctes.append(
            f"st AS (SELECT user_id, m.t AS t0, m.n AS n0 FROM (SELECT user_id, "
            f"{frag['min_pair'].format('t', 'name')} AS m FROM ev WHERE s GROUP BY user_id))"
        )
        ctes.append(
            "fw AS (SELECT ev.* FROM ev JOIN st USING (user_id) "
            "WHERE t > t0 OR (t = t0 AND name >= n0))"
        )
        rows = "fw"
    if end_c is not None:  # up to the first end event at or after the beginning
        ctes.append(
            f"en AS (SELECT user_id, m.t AS t1, m.n AS n1 FROM (SELECT user_id, "
            f"{frag['min_pair'].format('t', 'name')} AS m FROM {rows} WHERE e GROUP BY user_id))"
        )
        ctes.append(
            f"bw AS (SELECT {rows}.* FROM {rows} JOIN en USING (user_id) "
            "WHERE t < t1 OR (t = t1 AND name <= n1))"
        )
        rows = "bw"
    backwards = end_c is not None and start_c is None
    both = end_c is not None and start_c is not None
    order = "t DESC, name DESC" if backwards else "t, name"
    # Keep one more step than asked when both ends are given, to see who needed more.
    keep = q.steps + 1 if both else q.steps
    ctes.append(
        f"x AS {frag['cte_materialized']} (SELECT user_id, name, "
        f"{frag['lag'].format('name')} OVER w AS prev, {frag['lead'].format('name')} OVER w AS nx,"
        " row_number() OVER w AS rn "
        f"FROM {rows} WINDOW w AS (PARTITION BY user_id ORDER BY {order}))"
    )
    ctes.append("rep AS (SELECT user_id, count(*) AS r FROM x WHERE prev = name GROUP BY user_id)")
    # Only users with repeats need the second pass (without, the collapsed index is rn).
    join = "LEFT JOIN" if both else "JOIN"
    ctes.append(
        f"y AS (SELECT user_id, name, rn FROM x {join} rep USING (user_id) "
        "WHERE (prev IS NULL OR prev <> name) AND rn <= ? + coalesce(r, 0))"
    )
    params.append(keep)
    length = ", count(*) OVER (PARTITION BY user_id) AS len" if both else ""
    ctes.append(
        f"z AS (SELECT user_id, name, row_number() OVER v AS k,"
        f" {frag['lead'].format('name')} OVER v AS nxt{length} "
        "FROM y WINDOW v AS (PARTITION BY user_id ORDER BY rn))"
    )
    head = "WITH " + ",\n".join(ctes)
    if both:
        sql = f"{head}\nSELECT k AS step, name, nxt, count(*) FROM z WHERE len <= ? GROUP BY ALL"
        params.append(q.steps)
    else:
        # Forward: step = k, link k -> k+1 to nxt. Backward: step = steps + 1 - k, and nxt is
        # the step before, so the link is (step - 1, nxt) -> (step, name).
        step_sql = "(? + 1 - k)" if backwards else "k"
        sql = (
            f"{head}\nSELECT {step_sql} AS step, name, nxt, count(*) FROM ("
            "SELECT x.name, x.rn AS k, x.nx AS nxt FROM x LEFT JOIN rep USING (user_id) "
            "WHERE coalesce(rep.r, 0) = 0 AND x.rn <= ? "
            "UNION ALL SELECT name, k, nxt FROM z WHERE k <= ?) GROUP BY ALL"
        )
        params += [*([q.steps] if backwards else []), q.steps, q.steps]
    counted = store.query(sql, params)
    return _sankey(counted, q.steps, q.limit_per_step, backwards)


def _sankey(
    counted: list[tuple[Any, ...]], steps: int, limit: int, backwards: bool
) -> dict[str, Any]:
    node_users: dict[tuple[int, str], int] = defaultdict(int)
    link_users: dict[tuple[int, str, str], int] = defaultdict(int)  # (source step, src, dst)
    for step, name, nxt, users in counted:
        step, users = int(step), int(users)
        node_users[(step, name)] += users
        if nxt is None:
            continue
        if backwards:
            if step > 1:
                link_users[(step - 1, nxt, name)] += users
        elif step < steps:
            link_users[(step, name, nxt)] += users
    kept: dict[int, set[str]] = defaultdict(set)
    by_step: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for (step, name), users in node_users.items():
        by_step[step].append((name, users))
    for step, names in by_step.items():
        names.sort(key=lambda nu: (-nu[1], nu[0]))
        kept[step] = {name for name, _ in names[:limit]}

    def label(step: int, name: str) -> str:
        return name if name in kept[step] else OTHER

    nodes: dict[tuple[int, str], int] = defaultdict(int)
    for (step, name), users in node_users.items():
        nodes[(step, label(step, name))] += users
    links: dict[tuple[int, str, str], int] = defaultdict(int)
    for (step, src, dst), users in link_users.items():
        links[(step, label(step, src), label(step + 1, dst))] += users
    every_path_has = steps if backwards else 1
    return {
        "steps": steps,
        "users": sum(u for (s, _), u in nodes.items() if s == every_path_has),
        "nodes": [
            {"id": f"{step}:{name}", "step": step, "name": name, "users": users}
            for (step, name), users in sorted(
                nodes.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])
            )
        ],
        "links": [
            {"source": f"{step}:{src}", "target": f"{step + 1}:{dst}", "users": users}
            for (step, src, dst), users in sorted(
                links.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1], kv[0][2])
            )
        ],
    }
