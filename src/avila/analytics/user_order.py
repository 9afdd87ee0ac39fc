"""Rows sorted by user without sorting by the user's string id.

Funnels, sessions and the overview walk a range's rows user by user in time order. Sorting
millions of rows by ``user_id`` strings was most of their cost at 100 M events (5 M distinct
users in 30 days): :func:`rows_by_user` sorts by a 64-bit hash of the id instead (an integer
key: about half the CPU) and numbers the users by hash.

Exact, not probabilistic in its answers: two different users with the same hash would be
merged into one. So each row also carries a second, independent hash (of the id with a
prefix, which changes the hash state from its first byte), and when two neighbouring rows
agree on the first hash but not on the second, the rows are fetched again sorted by the id
itself. What is left is two users equal in both 64-bit hashes at once; for n users the chance
is about n² / 2¹²⁹ (5 M users: 4e-26), below any hardware error rate.

A range of more than :data:`CHUNK_ROWS` rows is read in slices of the hash space
(:func:`rows_by_user_chunks`): every slice holds whole users, in the same global order, so
per-user passes over the slices one after the other give the answer of one pass over all rows,
while only one slice is in this process's memory at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from time import monotonic
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from avila.analytics.common import fragments, user_codes
from avila.errors import QueryTimeout
from avila.storage.base import Store

T = TypeVar("T")


def rows_by_user(
    store: Store,
    sql: str,
    params: Sequence[Any],
    columns: str,
    order: str,
    *,
    key_sql: str | None = None,
    key_range: tuple[int, int | None] | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """``columns`` of the rows of ``sql`` (which has a ``user_id`` column), sorted by user and
    then by ``order``, with each row's 0-based user number (``user_id`` may be one of the
    columns; when two users share a hash, it is there in any case).

    Users are numbered in hash order (the same on every run of a backend). ``key_sql`` replaces
    the first hash (tests use a colliding one to check the fallback). ``key_range``
    ``(lo, hi)`` keeps the users whose first hash is in ``[lo, hi)`` (``hi`` None: no end)."""
    frag = fragments(store)
    key = key_sql or frag["hash"].format("user_id")
    check = frag["hash"].format("'#' || user_id")
    within, bounds = "", list(params)
    if key_range is not None:
        within = f" WHERE {key} >= ?" + (f" AND {key} < ?" if key_range[1] is not None else "")
        bounds += [key_range[0]] + ([key_range[1]] if key_range[1] is not None else [])
    table = store.query_arrow(
        f"SELECT {key} AS uh, {check} AS uh2, {columns} FROM ({sql}) AS r{within}"
        f" ORDER BY uh, {order}",
        bounds,
    )
    uh = table.column("uh").to_numpy()
    uh2 = table.column("uh2").to_numpy()
    same = uh[1:] == uh[:-1]
    if not np.any(same & (uh2[1:] != uh2[:-1])):
        codes = np.zeros(len(uh), dtype=np.int64)
        if len(uh) > 1:
            codes[1:] = np.cumsum(~same)
        return table.drop_columns(["uh", "uh2"]), codes
    named = [c.strip() for c in columns.split(",")]
    with_id = columns if "user_id" in named else f"user_id, {columns}"
    table = store.query_arrow(
        f"SELECT {with_id} FROM ({sql}) AS r{within} ORDER BY user_id, {order}", bounds
    )
    return table, user_codes(table.column("user_id"))


#: Most rows one pull brings into the server process. A pulled row costs it about 100 bytes
#: at its peak (the Arrow columns, their numpy views, the sort keys and per-session arrays),
#: so a slice is ~3 GB; a year of a busy project read at once ran the machine out of memory.
CHUNK_ROWS = 1 << 25


def rows_by_user_chunks(
    store: Store,
    sql: str,
    params: Sequence[Any],
    columns: str,
    order: str,
    *,
    rows: int,
    key_sql: str | None = None,
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """:func:`rows_by_user` for ``sql`` of about ``rows`` rows, in slices of at most about
    :data:`CHUNK_ROWS` rows: consecutive ranges of the (uniform 64-bit) user hash, so each
    slice holds whole users and the user numbers continue from one slice to the next.
    Raises :class:`QueryTimeout` when the store's ``query_timeout`` has passed between two
    slices."""
    slices = max(1, -(-rows // CHUNK_ROWS))
    if slices == 1:
        yield rows_by_user(store, sql, params, columns, order, key_sql=key_sql)
        return
    first_user = 0
    started = monotonic()
    for i in range(slices):
        if i and store.query_timeout and monotonic() - started > store.query_timeout:
            # Each slice's query has the limit; so has the whole pull.
            raise QueryTimeout.after(store.query_timeout)
        lo = (i << 64) // slices
        hi = ((i + 1) << 64) // slices if i + 1 < slices else None
        table, codes = rows_by_user(
            store, sql, params, columns, order, key_sql=key_sql, key_range=(lo, hi)
        )
        yield table, codes + first_user
        if len(codes):
            first_user += int(codes[-1]) + 1


#: Below this many rows a second thread costs more than it saves.
PARALLEL_MIN_ROWS = 1_000_000
#: Threads for per-user numpy passes; None = one per core (numpy releases the GIL in them).
PARALLEL_PARTS: int | None = None


def user_parts(codes: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Split rows sorted by user (``codes`` non-decreasing) into at most ``parts`` contiguous
    ``(lo, hi)`` row ranges of about equal size that never split a user."""
    n = len(codes)
    cuts = {0, n}
    for i in range(1, parts):
        target = n * i // parts
        if 0 < target < n:
            cuts.add(int(np.searchsorted(codes, codes[target], side="left")))
    bounds = sorted(cuts)
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]


def parallel_parts(codes: np.ndarray, work: Callable[[int, int], T]) -> list[T]:
    """``work(lo, hi)`` for each :func:`user_parts` range, in threads when there are enough
    rows; results in row order. Each range holds whole users, so per-user passes
    (funnel levels, sessions) give the same answer as one pass over all rows."""
    parts = PARALLEL_PARTS or max(1, min(os.cpu_count() or 1, 8))
    parts = parts if len(codes) >= PARALLEL_MIN_ROWS else 1
    ranges = user_parts(codes, parts) or [(0, 0)]
    if len(ranges) == 1:
        return [work(*ranges[0])]
    with ThreadPoolExecutor(len(ranges)) as pool:
        return list(pool.map(lambda r: work(*r), ranges))
