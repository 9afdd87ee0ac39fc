"""Deterministic assignment of users to variants by weight.

A user's bucket is ``int(md5(project_id + US + key + US + user_id)[:15 hex], 16) mod 10_000``
(US = the unit separator U+001F, UTF-8 bytes). The weights are turned into cumulative integer
bucket bounds (largest-remainder rounding of each weight's share of 10,000), and the variant is
the first whose bound exceeds the bucket. So the same user always gets the same variant of the
same experiment, different experiments split users independently, and the split matches the
weights to 1/10,000.

Why md5 and not a faster non-cryptographic hash (murmur3, fnv): the results query buckets every
exposed user inside the store, and md5 is computed identically by DuckDB (``md5``, ClickHouse
``MD5``) and by Python's standard library, so the API's answer and the results' counting can
never disagree. Nothing here needs a cryptographic property; md5 is just the common function.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from fractions import Fraction

from avila.analytics.common import Expr, fragments, invalid
from avila.storage.base import Store

BUCKETS = 10_000
SEPARATOR = "\x1f"
#: Hex digits of the digest used: 60 bits, so the value fits a signed BIGINT in every backend.
_HEX_DIGITS = 15


def bucket(project_id: str, key: str, user_id: str) -> int:
    """The user's bucket in ``[0, BUCKETS)`` for experiment ``key`` of ``project_id``."""
    text = project_id + SEPARATOR + key + SEPARATOR + user_id
    digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
    return int(digest[:_HEX_DIGITS], 16) % BUCKETS


def bucket_bounds(weights: Sequence[float], path: str = "variants") -> list[int]:
    """Cumulative exclusive upper bucket bounds, one per variant; the last is ``BUCKETS``.

    Each variant gets ``floor(share * BUCKETS)`` buckets, and the buckets left over go to the
    largest fractional remainders (ties: the earlier variant). A variant whose weight is too
    small to get one bucket is a ValidationFailed at ``{path}[i].weight``.
    """
    counts = _bucket_counts(tuple(str(w) for w in weights))
    for i, count in enumerate(counts):
        if count == 0:
            raise invalid(
                "weight_too_small",
                f"{path}[{i}].weight",
                f"variant {i} gets less than 1/{BUCKETS} of the users; raise its weight",
            )
    bounds, running = [], 0
    for count in counts:
        running += count
        bounds.append(running)
    return bounds


@functools.lru_cache(maxsize=1024)
def _bucket_counts(weights: tuple[str, ...]) -> tuple[int, ...]:
    """Largest-remainder bucket counts of the weights (decimal strings). Exact rationals of
    the weights as written (0.4 is 2/5), so equal remainders are equal and a tie goes to the
    earlier variant; float shares would break such ties by rounding error."""
    exact = [Fraction(w) for w in weights]
    total = sum(exact)
    shares = [w * BUCKETS / total for w in exact]
    counts = [int(s) for s in shares]
    left = BUCKETS - sum(counts)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in by_remainder[:left]:
        counts[i] += 1
    return tuple(counts)


def variant_index(bucket_value: int, bounds: Sequence[int]) -> int:
    for i, bound in enumerate(bounds):
        if bucket_value < bound:
            return i
    raise ValueError(f"bucket {bucket_value} outside [0, {BUCKETS})")


def assign(project_id: str, key: str, user_id: str, bounds: Sequence[int]) -> int:
    """The index of the variant ``user_id`` sees in experiment ``key``."""
    return variant_index(bucket(project_id, key, user_id), bounds)


def bucket_sql(store: Store, user_column: str, project_id: str, key: str) -> Expr:
    """SQL computing :func:`bucket` for every row's ``user_column`` in the store's dialect.
    ``user_column`` is a column name chosen by the caller, never input; the ids and the
    separator are parameters."""
    digest = fragments(store)["md5_prefix60"].format(f"concat(?, ?, ?, ?, {user_column})")
    return Expr(f"({digest} % {BUCKETS})", (project_id, SEPARATOR, key, SEPARATOR))


def variant_index_sql(bucket_column: str, bounds: Sequence[int]) -> Expr:
    """SQL mapping a bucket column to the variant index, as :func:`variant_index` does."""
    cases = " ".join(f"WHEN {bucket_column} < ? THEN {i}" for i in range(len(bounds)))
    return Expr(f"(CASE {cases} END)", tuple(bounds))
