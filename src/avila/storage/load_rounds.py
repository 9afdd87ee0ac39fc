"""What the loader's two threads hand each other: a round's rows, or one piece of a large round
(:class:`Prepared`), and the transaction a round goes into (:class:`Round`).

See :mod:`avila.storage.loader`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

if TYPE_CHECKING:
    from avila.storage.base import Store


@dataclass
class Prepared:
    """A round's rows (or one piece of them), decoded and laid out as Arrow. A round is one
    transaction; its last piece (``final``) commits it with the log position ``end``."""

    end: int
    rows: int
    events: pa.Table | None
    devices: pa.Table | None
    tables: list[tuple[str, pa.Table]]
    seconds: float
    start: int = 0  # the round's first log position
    final: bool = True
    #: not rows: the commit thread is to load ``start``..``end`` entry by entry where need be,
    #: setting aside what the store refuses for good (:mod:`avila.storage.quarantine`)
    isolate: bool = False


class NothingStored(Exception):
    """A round's commit failed and provably stored nothing of it, in a store without round
    transactions (ClickHouse, :meth:`~avila.storage.clickhouse.store.ClickHouseStore.commit_log_batch`):
    its first insert was refused before anything of it was written and no earlier try of the
    round left it pending. Such a round may be loaded entry by entry like a failed transaction
    (:meth:`avila.storage.loader.Loader._may_split`); any other failure of such a store may have
    stored part of the round, which is then retried whole. Carries the store's error
    (``__cause__``) and its text."""


#: Tells the commit thread that the round whose pieces it holds will not be finished (reading
#: it failed; it is read again from its start).
ABANDON = Prepared(0, 0, None, None, [], 0.0, final=False)


class Round(Protocol):
    """A round's transaction: :meth:`avila.storage.duckdb.store.DuckDBStore.open_log_round`,
    or :class:`OneBatch` for stores that take a round in one call."""

    def add(
        self,
        events: pa.Table | None = None,
        devices: pa.Table | None = None,
        tables: Sequence[tuple[str, pa.Table]] = (),
    ) -> None: ...

    def commit(self, position: int) -> None: ...

    def abort(self) -> None: ...


class OneBatch:
    """A round for stores without piecewise rounds: gathered, then one ``commit_log_batch``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events: list[pa.Table] = []
        self.devices: list[pa.Table] = []
        self.tables: dict[str, list[pa.Table]] = {}

    def add(
        self,
        events: pa.Table | None = None,
        devices: pa.Table | None = None,
        tables: Sequence[tuple[str, pa.Table]] = (),
    ) -> None:
        if events is not None:
            self.events.append(events)
        if devices is not None:
            self.devices.append(devices)
        for name, table in tables:
            self.tables.setdefault(name, []).append(table)

    def commit(self, position: int) -> None:
        self.store.commit_log_batch(
            position,
            events=concat(self.events),
            devices=concat(self.devices),
            tables=[(name, pa.concat_tables(parts)) for name, parts in self.tables.items()],
        )

    def abort(self) -> None:
        pass


def concat(tables: list[pa.Table]) -> pa.Table | None:
    if not tables:
        return None
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)
