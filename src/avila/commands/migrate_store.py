"""avila migrate-store --from URL --to URL: copy every table of one store into another, e.g. the
embedded DuckDB file into ClickHouse when moving to the scale-out tier::

    avila migrate-store --from duckdb:///data/avila.duckdb --to clickhouse://avila:pw@ch:8123/avila

Stop ``avila serve`` first: each store admits one process (DuckDB file, chdb directory), and
events acknowledged but not yet loaded from the source's ingest log would be left behind (the
command refuses while that log holds any; starting and stopping the server once loads it).

Tables are copied in Arrow batches (``--batch-rows``) with a progress bar: every table both
stores have (events, telemetry, devices, identities, experiments, alerts, ...), by column name;
the schema versions and ingest-log positions belong to each store and are not copied.

Re-running is safe: a table whose destination already holds as many rows as the source is
skipped as copied; one that is empty is copied; one with some other number of rows (an
interrupted run, or data written there since) is refused, naming the table, and nothing of it
is written (empty that table or the destination and run again).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from avila.commands.factory import positive_int
from avila.errors import AvilaError

#: Tables never copied: each store's own bookkeeping.
# person_map*: derived from identities, kept by the destination as they are copied.
OWN_TABLES = frozenset({"schema_version", "ingest_position", "person_map", "person_map_state"})


class MigrationRefused(AvilaError):
    status = 409
    code = "migration_refused"


def _tables(store: Any) -> dict[str, list[str]]:
    """Base tables of a store and their columns, in column order."""
    if store.backend == "clickhouse":
        rows = store.query(
            "SELECT c.table, c.name FROM system.columns AS c JOIN system.tables AS t"
            " ON t.database = c.database AND t.name = c.table"
            " WHERE c.database = currentDatabase() AND t.engine NOT IN ('View', 'MaterializedView')"
            " AND NOT endsWith(c.table, '_local') ORDER BY c.table, c.position"
        )
    else:
        rows = store.query(
            "SELECT c.table_name, c.column_name FROM information_schema.columns AS c"
            " JOIN information_schema.tables AS t ON t.table_name = c.table_name"
            " AND t.table_schema = c.table_schema WHERE c.table_schema = 'main'"
            " AND t.table_type = 'BASE TABLE' ORDER BY c.table_name, c.ordinal_position"
        )
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(str(table), []).append(str(column))
    return tables


def _count(store: Any, table: str) -> int:
    # ``table`` comes from the catalogs of both stores.
    return int(store.query(f"SELECT count(*) FROM {table}")[0][0])


def _check_source_log(url: str) -> None:
    """Refuse while the source's ingest log holds frames not loaded into it."""
    from avila.config import Settings
    from avila.storage.ingest_log import config_from_settings, default_log_dir
    from avila.storage.log_segments import read_frames

    settings = Settings.from_env()
    if url == settings.storage_url:
        directory = config_from_settings(settings).directory
    else:
        directory = default_log_dir(Settings.from_env(storage_url=url).duckdb_path)
    if not directory.is_dir():
        return
    from avila.storage import open_store

    store = open_store(url, read_only=True, lock_wait=1.0)
    try:
        position = store.log_position()
    finally:
        store.close()
    if next(iter(read_frames(directory, position)), None) is not None:
        raise MigrationRefused(
            f"the source's ingest log ({directory}) holds events not loaded into the store yet;"
            " start `avila serve` on the source once and stop it (it loads the log), then run"
            " migrate-store again"
        )


def migrate(source: Any, destination: Any, batch_rows: int, quiet: bool) -> dict[str, str]:
    """Copy the tables; returns table -> "copied N" / "already copied N"."""
    import pyarrow as pa
    from tqdm import tqdm

    src_tables = _tables(source)
    dst_tables = _tables(destination)
    plan: list[tuple[str, list[str], int]] = []
    outcome: dict[str, str] = {}
    refused: list[str] = []
    for table in sorted(src_tables):
        if table in OWN_TABLES or table not in dst_tables:
            continue
        columns = [c for c in src_tables[table] if c in dst_tables[table]]
        have, want = _count(destination, table), _count(source, table)
        if have == want:
            outcome[table] = f"already copied {want}"
        elif have == 0:
            plan.append((table, columns, want))
        else:
            refused.append(f"{table} (source {want} rows, destination {have})")
    if refused:
        raise MigrationRefused(
            "the destination already holds other rows in: "
            + ", ".join(refused)
            + "; empty those tables (or use an empty destination) and run again"
        )
    with tqdm(
        total=sum(n for _, _, n in plan),
        unit="rows",
        desc="migrate-store",
        disable=quiet or None,
        file=sys.stderr,
    ) as bar:
        for table, columns, want in plan:
            select = ", ".join(f'"{c}"' for c in columns)
            copied = 0
            for batch in source.query_batches(f"SELECT {select} FROM {table}", None, batch_rows):
                if not batch.num_rows:
                    continue
                rows = pa.Table.from_batches([batch])
                if table == "events":
                    destination.append_events(rows)
                else:
                    destination.append_table(table, rows)
                copied += batch.num_rows
                bar.update(batch.num_rows)
            outcome[table] = f"copied {copied}"
            if copied != want:
                raise AvilaError(f"{table}: copied {copied} rows of {want}", code="migration_short")
    return outcome


def run(args: argparse.Namespace) -> int:
    from avila.commands.export import open_local_store

    if args.source == args.destination:
        raise AvilaError("--from and --to name the same store", code="bad_argument")
    _check_source_log(args.source)
    source = open_local_store(args.source, read_only=True)
    try:
        destination = open_local_store(args.destination, read_only=False)
        try:
            outcome = migrate(source, destination, args.batch_rows, args.quiet)
        finally:
            destination.close()
    finally:
        source.close()
    for table, what in sorted(outcome.items()):
        print(f"{table}: {what}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "migrate-store",
        help="copy every table of one store into another (e.g. DuckDB to ClickHouse)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from", dest="source", required=True, help="source storage URL")
    parser.add_argument("--to", dest="destination", required=True, help="destination storage URL")
    parser.add_argument(
        "--batch-rows", type=positive_int, default=100_000, help="rows per batch (default 100000)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
