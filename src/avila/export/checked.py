"""The outcome of validating one import batch: the accepted rows' schema, :class:`Checked` (the
accepted rows, as masks over the fast path's table plus the per-event path's table) and
:class:`Rejected` (a row the API would not accept, at a field path in its event)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from avila.storage.schema import EVENT_SCHEMA

#: The accepted rows' table: the stored event columns plus the file's 1-based row number.
ACCEPTED_SCHEMA = EVENT_SCHEMA.append(pa.field("row", pa.int64()))


@dataclass(frozen=True)
class Rejected:
    """A row the API would not accept: row number, code, message, field path in the event."""

    row: int
    code: str
    message: str
    path: str = ""


@dataclass
class Checked:
    """One batch's outcome. The accepted rows (:data:`ACCEPTED_SCHEMA`) are the rows of
    ``fast`` that ``keep`` marks (all when None; the others were rejected or judged per event),
    then ``slow``: the rows the per-event path accepted. Masks instead of filtered copies: the
    store filters while it appends (copying every column of every batch cost ~25 % of
    validation)."""

    fast: pa.Table
    keep: np.ndarray | None = None
    slow: pa.Table = field(default_factory=ACCEPTED_SCHEMA.empty_table)
    rejected: list[Rejected] = field(default_factory=list)
    slow_rows: int = 0

    @property
    def accepted(self) -> pa.Table:
        """The accepted rows as one table, in row order."""
        fast = self.fast if self.keep is None else self.fast.filter(pa.array(self.keep))
        if self.slow.num_rows == 0:
            return fast
        return pa.concat_tables([fast, self.slow]).sort_by("row")


def merge(fast: pa.Table, accept: np.ndarray, slow: Checked) -> Checked:
    return Checked(fast, None if accept.all() else accept, slow.slow, slow.rejected, slow.slow_rows)


def field_path(path: str) -> str:
    """``events[3].timestamp`` -> ``timestamp``: the row number says which event."""
    return path.split("]", 1)[1].lstrip(".") if path.startswith("events[") else path
