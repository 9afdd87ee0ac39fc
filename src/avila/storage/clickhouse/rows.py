"""ClickHouse forms of the keyed small-table writes of :class:`avila.storage.base.Store`.

ClickHouse has no transactions: each write inserts whole new rows into a ReplacingMergeTree
table (reads use ``FINAL``, so the newest row per key wins) and counts first under the store's
write lock, which makes compare-and-set and insert-if-absent exact within one process (across
replicas of a cluster they are last-writer-wins, docs/scale-out.md). Names are checked against
the catalog (``system.columns``) before they are quoted into a statement.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from avila.storage.base import Store, check_columns, where_clause
from avila.storage.clickhouse.params import prepare
from avila.storage.clickhouse.target import ClickHouseOptions

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class ClickHouseRows(Store):
    """Base of :class:`avila.storage.clickhouse.store.ClickHouseStore`: what it provides below."""

    options: ClickHouseOptions
    _catalog: dict[str, frozenset[str]]
    _write_lock: threading.RLock

    def _client(self) -> Client:
        raise NotImplementedError

    def _query_rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _insert_settings(self, token: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    # -- catalog -------------------------------------------------------------------------------

    def _check_columns(self, table: str, names: Sequence[str]) -> None:
        """ValueError unless ``table`` is a table of this database with every column in
        ``names`` (so they may be quoted into a statement)."""
        check_columns(
            self._catalog,
            table,
            names,
            lambda name: self._query_rows(
                "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ?",
                [name],
            ),
        )

    def _columns(self, table: str) -> list[str]:
        self._check_columns(table, ())
        rows = self._query_rows(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ?"
            " ORDER BY position",
            [table],
        )
        return [r[0] for r in rows]

    _where = staticmethod(where_clause)

    def _select(self, table: str, where: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
        columns = self._columns(table)
        self._check_columns(table, list(where))
        params: list[Any] = []
        cols = ", ".join(f"`{c}`" for c in columns)
        rows = self._query_rows(
            f"SELECT {cols} FROM {table} WHERE {self._where(where, params)}", params
        )
        return columns, [list(r) for r in rows]

    def _count(self, table: str, where: Mapping[str, Any]) -> int:
        self._check_columns(table, list(where))
        params: list[Any] = []
        rows = self._query_rows(
            f"SELECT count() FROM {table} WHERE {self._where(where, params)}", params
        )
        return int(rows[0][0])

    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if rows:
            # clickhouse-connect reads a naive datetime as local time; ours are naive UTC.
            self._client().insert(
                table,
                [[_aware(v) for v in r] for r in rows],
                column_names=list(columns),
                settings=self._insert_settings(),
            )

    # -- keyed small-table writes (see the module docstring) -------------------------------------

    def insert_new(self, table: str, key: Sequence[str], row: Mapping[str, Any]) -> bool:
        self._check_columns(table, list(row))
        with self._write_lock:
            if self._count(table, {k: row[k] for k in key}):
                return False
            self._insert_rows(table, list(row), [list(row.values())])
            return True

    def upsert(self, table: str, key: Sequence[str], row: Mapping[str, Any]) -> None:
        self._check_columns(table, list(row))
        with self._write_lock:
            columns, current = self._select(table, {k: row[k] for k in key})
            if current:
                merged = dict(zip(columns, current[0], strict=True))
                merged.update(row)
                self._insert_rows(table, columns, [[merged[c] for c in columns]])
            else:
                self._insert_rows(table, list(row), [list(row.values())])

    def update_rows(
        self,
        table: str,
        where: Mapping[str, Any],
        values: Mapping[str, Any],
        expect: Mapping[str, Any] | None = None,
    ) -> int:
        self._check_columns(table, list(values))
        with self._write_lock:
            columns, rows = self._select(table, {**where, **(expect or {})})
            index = {c: i for i, c in enumerate(columns)}
            for r in rows:
                for name, value in values.items():
                    r[index[name]] = value
            self._insert_rows(table, columns, rows)
            return len(rows)

    def update_many(self, table: str, key: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        self._check_columns(table, list(rows[0]))
        changed = 0
        with self._write_lock:
            for start in range(0, len(rows), 500):
                chunk = rows[start : start + 500]
                by_key = {tuple(r[k] for k in key): r for r in chunk}
                # Narrow by the first key column (IN), then match whole keys here.
                columns, current = self._select(table, {key[0]: sorted({k[0] for k in by_key})})
                index = {c: i for i, c in enumerate(columns)}
                patched = []
                for stored in current:
                    new = by_key.get(tuple(stored[index[k]] for k in key))
                    if new is None:
                        continue
                    for name, value in new.items():
                        stored[index[name]] = value
                    patched.append(stored)
                self._insert_rows(table, columns, patched)
                changed += len(patched)
        return changed

    def delete_rows(self, table: str, where: Mapping[str, Any]) -> int:
        with self._write_lock:
            count = self._count(table, where)
            if count:
                params: list[Any] = []
                condition = self._where(where, params)
                if self.options.cluster:
                    # Lightweight DELETE runs on the replicated tables, not the Distributed one.
                    statement = (
                        f"DELETE FROM {table}_local ON CLUSTER {self.options.cluster}"
                        f" WHERE {condition}"
                    )
                else:
                    statement = f"DELETE FROM {table} WHERE {condition}"
                query, values = prepare(statement, params)
                self._client().command(query, parameters=values)
            return count
