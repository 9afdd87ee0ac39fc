"""``?`` positional parameters for clickhouse-connect, which binds ``%s`` client-side.

Callers write the same ``?`` placeholders on every backend. Here each ``?`` outside quotes and
comments becomes ``%s`` and every literal ``%`` becomes ``%%`` (clickhouse-connect formats the
query with Python's ``%`` operator when parameters are given). The values themselves are always
formatted by clickhouse-connect's own escaping (``format_query_value``), never pasted here.

Datetimes: clickhouse-connect renders a plain ``datetime`` with second precision, so each is
wrapped in a ``DT64Param`` (microseconds kept); aware values are converted to naive UTC first,
the convention of every stored timestamp. The year is written with four digits: ``strftime``
leaves a year below 1000 unpadded (``1-01-01``), which ClickHouse reads as 2001.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.binding import DT64Param


def translate(sql: str) -> str:
    """``sql`` with ``?`` placeholders as ``%s`` and ``%`` escaped as ``%%``."""
    out: list[str] = []
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"', "`"):
            # A quoted literal or identifier: copied up to its closing quote (a doubled quote
            # or a backslash escape stays inside it).
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i : j + 1].replace("%", "%%"))
            i = j + 1
        elif ch == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j].replace("%", "%%"))
            i = j
        elif ch == "/" and sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(sql[i:j].replace("%", "%%"))
            i = j
        elif ch == "?":
            out.append("%s")
            i += 1
        elif ch == "%":
            out.append("%%")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class UTCDateTime64(DT64Param):
    """A naive UTC datetime as a ``DateTime64(6)`` literal, any year 1..9999 (zero-padded)."""

    def format(self, tz: Any, top_level: bool) -> str:
        v = self.value
        text = (
            f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
            f" {v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
        )
        return text if top_level else f"'{text}'"


def bind_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return UTCDateTime64(value)
    return value


def prepare(sql: str, params: Sequence[Any] | None) -> tuple[str, list[Any] | None]:
    """The query and parameter list to hand to clickhouse-connect."""
    if not params:
        return sql, None
    return translate(sql), [bind_value(v) for v in params]
