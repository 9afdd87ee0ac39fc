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

#: The JSONPath bound as the parameter ("$.a.b", keys of letters, digits, "_" and "-") with
#: every key quoted: ``$."a"."b"``.
_JSON_PATH = "concat('$.\"', replaceAll(substring(?, 3), '.', '\".\"'), '\"')"

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
    # JSONPath (bound once per "?") -> text like DuckDB's json_extract_string: NULL when the
    # path is absent or JSON null; strings unquoted; numbers, booleans as their JSON text;
    # objects and arrays as JSON text.
    # (JSON_VALUE is '' for objects, arrays and the empty string; JSON_QUERY wraps what it
    # finds in [...], and the brackets are cut off.) Every key of the bound path is quoted
    # ($.a.my-key -> $."a"."my-key"): ClickHouse's JSONPath parser refuses a bare key with a
    # "-", which the documented property paths allow. A constant expression, folded once.
    "json_string": (
        f"if(NOT JSON_EXISTS({{0}}, {_JSON_PATH}) OR JSON_QUERY({{0}}, {_JSON_PATH}) = '[null]',"
        f" NULL, if(JSON_VALUE({{0}}, {_JSON_PATH}) = ''"
        f" AND JSON_QUERY({{0}}, {_JSON_PATH}) <> '[\"\"]',"
        f" substring(JSON_QUERY({{0}}, {_JSON_PATH}), 2,"
        f" length(JSON_QUERY({{0}}, {_JSON_PATH})) - 2), JSON_VALUE({{0}}, {_JSON_PATH})))"
    ),
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
