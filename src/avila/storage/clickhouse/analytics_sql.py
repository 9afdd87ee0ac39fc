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
    # finds in [...], and the brackets are cut off.)
    "json_string": (
        "if(NOT JSON_EXISTS({0}, ?) OR JSON_QUERY({0}, ?) = '[null]', NULL,"
        " if(JSON_VALUE({0}, ?) = '' AND JSON_QUERY({0}, ?) <> '[\"\"]',"
        " substring(JSON_QUERY({0}, ?), 2, length(JSON_QUERY({0}, ?)) - 2), JSON_VALUE({0}, ?)))"
    ),
    "to_double": "toFloat64OrNull(toString({0}))",
    "match_exact": "({0} = ?)",
    "match_prefix": "startsWith({0}, ?)",
    "match_contains": "(position({0}, ?) > 0)",
    "match_regex": "match({0}, ?)",
    "regex_probe": "SELECT match('', ?)",
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
    "day_start": "toDateTime64(toStartOfDay({0}), 6, 'UTC')",
    "time_bucket_us": (
        "toStartOfInterval({1}, toIntervalMicrosecond({0}),"
        " toDateTime64('2000-01-03 00:00:00', 6, 'UTC'))"
    ),
    "purchase_item_ids": (
        "arrayJoin(arrayMap(x -> JSONExtract(x, 'product_id', 'Nullable(String)'),"
        " JSONExtractArrayRaw(coalesce({0}, ''), 'items')))"
    ),
    "hash": "cityHash64({0})",
    "md5_prefix60": "bitShiftRight(reinterpretAsUInt64(reverse(substring(MD5({0}), 1, 8))), 4)",
}
