"""The SQL fragment tables of the backends: same keys, same placeholders, same parameters.

A key present in one table only would fail at run time on the other backend (a KeyError in the
middle of a report); placeholders ({0}, {1} ...) and bound parameters (``?``) that differ
would shift the parameters of the whole statement.
"""

from __future__ import annotations

import re
from string import Formatter

from avila.storage.clickhouse.analytics_sql import FRAGMENTS as CLICKHOUSE
from avila.storage.duckdb.analytics_sql import FRAGMENTS as DUCKDB


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(template) if name is not None}


def _parameters(template: str) -> int:
    return len(re.findall(r"\?", re.sub(r"'[^']*'", "", template)))


def test_both_tables_have_the_same_keys() -> None:
    assert sorted(DUCKDB) == sorted(CLICKHOUSE)


def test_fragments_take_the_same_placeholders() -> None:
    for key, duck in DUCKDB.items():
        assert _fields(duck) == _fields(CLICKHOUSE[key]), key


def test_bound_parameters_agree_or_are_repeated_per_placeholder() -> None:
    """Same number of ``?`` everywhere, except ``json_string``, whose path parameter is bound
    once per ``?`` (:func:`avila.analytics.common.property_expr` repeats it)."""
    for key, duck in DUCKDB.items():
        if key == "json_string":
            assert _parameters(duck) >= 1 and _parameters(CLICKHOUSE[key]) >= 1
            continue
        assert _parameters(duck) == _parameters(CLICKHOUSE[key]), key
