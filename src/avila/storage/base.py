"""The storage interface. Analytics, ingestion and exports talk to this, never to a driver.

A backend owns one database. Writes come from exactly one writer (the ingest group commit);
reads may come from any thread. Backend differences are data (SQL tables per dialect), not
branches in callers.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from avila.storage.schema import ColumnBatch, columns_to_arrow


class Store(ABC):
    """A place events are durably stored and queried."""

    #: Short backend name, used to pick SQL dialect tables (``"duckdb"``).
    backend: str

    @abstractmethod
    def append_events(self, table: pa.Table) -> None:
        """Append rows (schema :data:`avila.storage.schema.EVENT_SCHEMA`) in one durable
        transaction: when this returns, the rows survive a crash."""

    def append_table(self, table_name: str, table: pa.Table) -> None:
        """Append rows to another table of the schema (telemetry, identities ...) in one durable
        transaction. ``table_name`` must be an existing table created by a migration (checked
        against the catalog, never taken as SQL); Arrow columns are matched to columns by name."""
        raise NotImplementedError

    async def append_table_async(self, table_name: str, table: pa.Table) -> None:
        await asyncio.to_thread(self.append_table, table_name, table)

    async def append_events_async(self, table: pa.Table) -> None:
        """:meth:`append_events` for the event loop; backends may override to avoid a thread."""
        await asyncio.to_thread(self.append_events, table)

    async def append_columns_async(self, batches: list[ColumnBatch]) -> None:
        """Append column batches (see :data:`avila.storage.schema.ColumnBatch`) in one durable
        transaction, from the event loop."""
        await self.append_events_async(columns_to_arrow(batches))

    @abstractmethod
    def recent_event_keys(self, since: datetime) -> Iterator[tuple[str, str]]:
        """``(project_id, event_id)`` of every event received at or after ``since`` (UTC)."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query with positional parameters; rows as tuples."""

    @abstractmethod
    def query_arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Run a read query with positional parameters; result as an Arrow table."""

    @abstractmethod
    def query_batches(
        self, sql: str, params: Sequence[Any] | None = None, batch_rows: int = 65536
    ) -> Iterator[pa.RecordBatch]:
        """Stream a read query's result in Arrow record batches (constant memory)."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Run one write statement in its own transaction; returns affected rows if known."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot answer a trivial query."""

    @abstractmethod
    def close(self) -> None:
        """Release the database; pending transactions are already committed."""
