"""DuckDB forms of the keyed small-table writes of :class:`avila.storage.base.Store`.

Built on the store's own ``execute``/``query``, so the in-process store and the store process
share them. Every DuckDB write is one transaction and reports its affected rows; names are
checked against the catalog before they are quoted into the statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from avila.storage.base import Store, check_columns, where_clause


class DuckDBRows(Store):
    """Base of the DuckDB stores (in process and in the store process)."""

    _catalog: dict[str, frozenset[str]]
    has_rollups = True
    has_user_history = True
    has_kept_sessions = True
    #: Loader rounds may grow to this many rows to catch up (:class:`avila.storage.loader.
    #: Loader`): two of DuckDB's row groups (122,880 rows each), which a transaction writes
    #: compressed straight into the file instead of through the WAL.
    catch_up_load_rows = 2 * 122_880

    def erase_users(self, project_id: str, user_ids: Sequence[str], *, links: bool) -> int:
        """One transaction: the rollups forget the users, their events go, and (``links``)
        the identity links naming them go and the project's person map is recomputed without
        them. A crash or error midway leaves all as it was, so a retried erase never subtracts
        a user from the rollups twice and the map is never left stale."""
        from avila.storage import person_map, purchase_table, rollups, session_table

        marks = ", ".join("?" for _ in user_ids)
        statements = rollups.forget_statements(project_id, user_ids)
        statements.extend(session_table.forget_statements(project_id, user_ids))
        statements.extend(purchase_table.forget_statements(project_id, user_ids))
        deleting = len(statements)
        statements.append(
            (f"DELETE FROM events WHERE project_id = ? AND user_id IN ({marks})",
             [project_id, *user_ids])
        )  # fmt: skip
        if links:
            for column in ("user_id", "anonymous_id"):
                statements.append(
                    (f"DELETE FROM identities WHERE project_id = ? AND {column} IN ({marks})",
                     [project_id, *user_ids])
                )  # fmt: skip
            statements.extend(person_map.rebuild_statements(project_id))
        return self.execute_all(statements)[deleting]

    def _columns(self, table: str, names: Sequence[str]) -> str:
        """``"a", "b"`` for ``names`` once each is a column of ``table`` (ValueError if not)."""
        catalog = getattr(self, "_catalog", None)
        if catalog is None:
            catalog = self._catalog = {}
        check_columns(
            catalog,
            table,
            names,
            lambda name: self.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
                " AND table_schema = 'main'",
                [name],
            ),
        )
        return ", ".join(f'"{n}"' for n in names)

    _where = staticmethod(where_clause)

    def insert_new(self, table: str, key: Sequence[str], row: Mapping[str, Any]) -> bool:
        cols = self._columns(table, list(row))
        self._columns(table, key)
        marks = ", ".join("?" for _ in row)
        params: list[Any] = list(row.values())
        # One statement (atomic under the single writer); tables with a primary key on ``key``
        # are protected by it as well.
        exists = self._where({k: row[k] for k in key}, params)
        return (
            self.execute(
                f"INSERT INTO {table} ({cols}) SELECT {marks}"
                f" WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {exists})",
                params,
            )
            == 1
        )

    def upsert(self, table: str, key: Sequence[str], row: Mapping[str, Any]) -> None:
        """``key`` must be the table's primary key (ON CONFLICT needs the constraint)."""
        cols = self._columns(table, list(row))
        keys = self._columns(table, key)
        rest = [n for n in row if n not in key]
        marks = ", ".join("?" for _ in row)
        action = (
            "DO UPDATE SET " + ", ".join(f'"{n}" = excluded."{n}"' for n in rest)
            if rest
            else "DO NOTHING"
        )
        self.execute(
            f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({keys}) {action}",
            list(row.values()),
        )

    def update_rows(
        self,
        table: str,
        where: Mapping[str, Any],
        values: Mapping[str, Any],
        expect: Mapping[str, Any] | None = None,
    ) -> int:
        condition = {**where, **(expect or {})}
        self._columns(table, [*values, *condition])
        params: list[Any] = list(values.values())
        sets = ", ".join(f'"{n}" = ?' for n in values)
        return self.execute(
            f"UPDATE {table} SET {sets} WHERE {self._where(condition, params)}", params
        )

    def update_many(self, table: str, key: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        names = list(rows[0])
        self._columns(table, names)
        rest = [n for n in names if n not in key]
        alias = {n: f"c{i}" for i, n in enumerate(names)}
        changed = 0
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            values = ", ".join("(" + ", ".join("?" for _ in names) + ")" for _ in chunk)
            params = [r[n] for r in chunk for n in names]
            changed += self.execute(
                f"UPDATE {table} SET "
                + ", ".join(f'"{n}" = v.{alias[n]}' for n in rest)
                + f" FROM (VALUES {values}) AS v({', '.join(alias.values())}) WHERE "
                + " AND ".join(f'{table}."{n}" = v.{alias[n]}' for n in key),
                params,
            )
        return changed

    def delete_rows(self, table: str, where: Mapping[str, Any]) -> int:
        self._columns(table, list(where))
        params: list[Any] = []
        return self.execute(f"DELETE FROM {table} WHERE {self._where(where, params)}", params)
