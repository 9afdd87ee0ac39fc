"""DuckDB SQL fragments used by :mod:`avila.analytics`.

Backend differences are data: each backend ships a dict with the same keys; analytics code
formats ``{0}``/``{1}`` with column expressions and binds values as ``?`` parameters, never as
text. A ClickHouse backend would map e.g. ``match_prefix`` to ``startsWith({0}, ?)`` and
``json_string`` to ``JSONExtractString({0}, ?)`` (with the path split into keys).
"""

from __future__ import annotations

FRAGMENTS: dict[str, str] = {
    # Microseconds since the Unix epoch of a naive UTC TIMESTAMP.
    "epoch_us": "epoch_us({0})",
    # A JSON text column's value at the JSONPath bound as the parameter, as VARCHAR (or NULL).
    "json_string": "json_extract_string({0}, ?)",
    "to_double": "TRY_CAST({0} AS DOUBLE)",
    "match_exact": "({0} = ?)",
    "match_prefix": "starts_with({0}, ?)",
    "match_contains": "contains({0}, ?)",
    "match_regex": "regexp_matches({0}, ?)",
    # Compiles a pattern with the backend's regex engine; raises on a bad pattern.
    "regex_probe": "SELECT regexp_matches('', ?)",
    # Integer floor division of non-negative BIGINTs.
    "int_div": "(({0}) // ({1}))",
    # Year*12 + month-1 of the timestamp at {0} microseconds since the epoch.
    "month_index": "(year(make_timestamp({0})) * 12 + month(make_timestamp({0})) - 1)",
    "list_agg": "list({0})",
}
