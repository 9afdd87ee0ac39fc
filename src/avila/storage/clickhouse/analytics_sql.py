"""ClickHouse SQL fragments used by :mod:`avila.analytics`, :mod:`avila.ml` and
:mod:`avila.industry40` (the same keys as :mod:`avila.storage.duckdb.analytics_sql`; read its
docstring for what each key means; a test checks both tables have the same keys).

Written for ClickHouse 24.4+ (embedded chdb and servers) with the analyzer on and default
join settings: a LEFT JOIN's missing side is the column type's default (NULL only for Nullable
columns), so callers test "no match" on Nullable columns or counts, never ``IS NULL`` on a
key. ``ts``/``received_at`` are ``DateTime64(6, 'UTC')``; the identity views
(``events_resolved``, ``identity_resolved``) come from the store's migrations, with DuckDB's
names and meaning.
"""

from __future__ import annotations

#: Most keys in a property path: ``properties.`` plus the 8 keys the analytics allow-list admits.
_MAX_KEYS = 9


def json_string_at_depth(depth: int) -> str:
    """``json_string`` for a path of ``depth`` keys, each ``?`` bound to the JSONPath ("$.a.b":
    keys "a", "b"): the property as DuckDB's ``json_extract_string`` reads it.
    :func:`avila.analytics.common.property_expr` uses it (it knows the depth); ClickHouse plans
    it in a few ms, the depth-generic ``json_string`` fragment in about 30 ms.

    ``JSONExtract(..., 'Nullable(String)')`` is already that text for strings (unquoted), integers
    (any size: beyond 64 bits ClickHouse keeps the digits), booleans, objects and arrays, and NULL
    for JSON null or an absent key. A JSON float is the one difference: DuckDB writes a double
    with its shortest round-trip digits in decimal notation from 1e-6 to below 1e21 and in
    ``1e21``/``1.5e-7`` notation outside, as ClickHouse does, but with ``.0`` after an
    integral value in decimal notation (``10.0``, ``1000.0`` for ``1e3``, ``-0.0``), which
    ClickHouse leaves off. ``JSONType`` tells a float from an integer, whose text is the same.
    """
    keys = ", ".join(f"splitByChar('.', ?)[{i + 2}]" for i in range(depth))
    text = f"JSONExtract({{0}}, {keys}, 'Nullable(String)')"
    return (
        f"if(JSONType({{0}}, {keys}) = 'Double',"
        f" replaceRegexpOne({text}, '^(-*[0-9]+)$', '\\\\1.0'), {text})"
    )


def _json_string() -> str:
    """:func:`json_string_at_depth` for the bound path's number of keys, whatever it is.
    ClickHouse's JSON functions take the keys as separate arguments, so there is one branch per
    depth; the depth is a constant (the path is a parameter), so ClickHouse folds the ``if``
    chain to one branch before it reads a row. Every key stays a parameter:
    ``splitByChar('.', ?)[i]`` of the path."""
    sql = json_string_at_depth(_MAX_KEYS)
    for depth in range(_MAX_KEYS - 1, 0, -1):
        sql = f"if(length(splitByChar('.', ?)) = {depth + 1}, {json_string_at_depth(depth)}, {sql})"
    return sql


FRAGMENTS: dict[str, str] = {
    # The store's migrations create DuckDB's identity views under the same names. The probe's
    # row (1: true) sends every stitched project to events_source.
    "events_source": "events_resolved",
    "stitching_probe": "SELECT 1 FROM identities WHERE project_id = ? LIMIT 1",
    "events_unstitched": "events",
    # No materialised person map here: the recursive view is always the resolution.
    "events_resolved": "events_resolved",
    "person_aliases": (
        "SELECT anonymous_id FROM identity_resolved WHERE project_id = ? AND user_id = ?"
    ),
    "epoch_us": "toUnixTimestamp64Micro({0})",
    # JSONPath (bound once per "?", "$.a.b") -> text exactly as DuckDB's json_extract_string
    # gives it: NULL when the path is absent or JSON null; strings unquoted; numbers, booleans,
    # objects and arrays as JSON text (see json_string_at_depth).
    "json_string": _json_string(),
    # DuckDB's TRY_CAST(text AS DOUBLE): surrounding ASCII white space is ignored and a single
    # "_" between two digits is a digit separator (" 3" is 3, "1_000" is 1000, "1__0" and
    # "_1" are NULL). {0} appears once (it may carry parameters); two non-overlapping passes
    # remove every separator of a valid number ("1_2_3": "12_3", then "123").
    "to_double": (
        "toFloat64OrNull(replaceRegexpAll(replaceRegexpAll("
        r"trim(BOTH ' \t\n\x0B\x0C\r' FROM toString({0})),"
        r" '([0-9])_([0-9])', '\\1\\2'), '([0-9])_([0-9])', '\\1\\2'))"
    ),
    "match_exact": "({0} = ?)",
    "match_prefix": "startsWith({0}, ?)",
    "match_contains": "(position({0}, ?) > 0)",
    # ClickHouse compiles patterns with RE2's dot_nl on ("." matches a newline); DuckDB (and
    # RE2 by default) do not. "(?-s)" turns it off; a pattern's own "(?s)" turns it on again.
    "match_regex": "match({0}, concat('(?-s)', ?))",
    "regex_probe": "SELECT match('', concat('(?-s)', ?))",
    "int_div": "intDiv({0}, {1})",
    "month_index": (
        "(toYear(fromUnixTimestamp64Micro(toInt64({0}), 'UTC')) * 12"
        " + toMonth(fromUnixTimestamp64Micro(toInt64({0}), 'UTC')) - 1)"
    ),
    "list_agg": "groupArray({0})",
    "replayed_event": "coalesce(JSON_VALUE(metadata, '$.source'), '')"
    " IN ('demo', 'backfill', 'import')",
    "cte_materialized": "",
    # {2} (the largest bit) is bound as a parameter. The shift is clamped to [{1}, {2}]: the
    # arguments are computed for rows the FILTER drops too (and the clamp uses {2} once).
    "bitset_agg": "groupBitOr(bitShiftLeft(toUInt64(1), least(greatest({0}, {1}), {2})))",
    "bit_at": "bitTest({0}, {1})",
    "bit": "bitShiftLeft(toUInt64(1), {0})",
    "bit_or_agg": "groupBitOr({0})",
    "popcount": "bitCount({0})",
    "bits_of": "bitAnd(bitShiftRight({0}, {1}), {2})",
    "day_of_month": "toDayOfMonth(fromUnixTimestamp64Micro(toInt64({0}), 'UTC'))",
    "min_pair": "min(CAST(tuple({0}, {1}), 'Tuple(t Int64, n String)'))",
    "null_text": "CAST(NULL AS Nullable(String))",
    "null_double": "CAST(NULL AS Nullable(Float64))",
    "nullable": "toNullable({0})",
    "lag": "lag(toNullable({0}))",
    "lead": "lead(toNullable({0}))",
    # last_value skips NULLs by default in ClickHouse.
    "last_non_null": "last_value({0})",
    "arg_max": "argMax(toNullable({0}), {1})",
    "series_from_1": "(SELECT arrayJoin(range(1, {0})) AS i) AS r",
    # Integer arithmetic on epoch microseconds, not toStartOfDay/toStartOfInterval: those
    # return a DateTime (1970..2106) or refuse a time before their origin, and events may be
    # from any year 1..9999 (a device clock reset to 1970, a client's 1969). {0} (day_start)
    # and {1} (time_bucket_us) are column expressions, used twice; {0} of time_bucket_us
    # (the width, possibly a parameter) once. 946857600000000: 2000-01-03 00:00 UTC.
    "day_start": (
        "fromUnixTimestamp64Micro(toInt64(toUnixTimestamp64Micro({0})"
        " - positiveModulo(toUnixTimestamp64Micro({0}), toInt64(86400000000))), 'UTC')"
    ),
    "time_bucket_us": (
        "fromUnixTimestamp64Micro(toInt64(toUnixTimestamp64Micro({1})"
        " - positiveModulo(toUnixTimestamp64Micro({1}) - 946857600000000, toInt64({0}))), 'UTC')"
    ),
    "purchase_item_ids": (
        "arrayJoin(arrayMap(x -> JSONExtract(x, 'product_id', 'Nullable(String)'),"
        " JSONExtractArrayRaw(coalesce({0}, ''), 'items')))"
    ),
    "hash": "cityHash64({0})",
    "md5_prefix60": "bitShiftRight(reinterpretAsUInt64(reverse(substring(MD5({0}), 1, 8))), 4)",
}
