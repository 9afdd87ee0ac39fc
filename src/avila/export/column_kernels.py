"""Arrow kernels over whole columns for the columnar import validator
(:mod:`avila.export.columnar`): boolean masks, text lengths and shapes, distinct values, and
decoding a column of JSON texts with one msgspec call."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def joined_json(texts: pa.Array) -> bytes:
    """``[t0,t1,...]``: the texts (no nulls) as one JSON array's bytes."""
    wrapped = pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts)
    joined: bytes = b"[" + pc.binary_join(wrapped, ",")[0].as_buffer() + b"]"
    return joined


def aligned(texts: pa.Array, blob: bytes) -> bool:
    """Whether ``blob`` (from :func:`joined_json`) parses as exactly one JSON value per text: a
    text like ``{},{}`` would otherwise shift every value after it."""
    try:
        raws = RAW_LIST.decode(blob)
    except msgspec.DecodeError:
        return False
    if len(raws) != len(texts):
        return False
    lengths = np.fromiter((len(r) for r in raws), dtype=np.int64, count=len(raws))
    return bool(np.array_equal(lengths, pc.binary_length(texts).to_numpy(zero_copy_only=False)))


def decode_all(
    texts: pa.Array, whole: msgspec.json.Decoder[Any], one: msgspec.json.Decoder[Any] | None
) -> tuple[list[Any], np.ndarray]:
    """Decode every text (no nulls); returns the values and a mask of texts that failed (their
    values are None). One C call when all are valid, one per text otherwise."""
    n = len(texts)
    blob = joined_json(texts)
    if aligned(texts, blob):
        try:
            return list(whole.decode(blob)), np.zeros(n, dtype=bool)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    values: list[Any] = []
    failed = np.zeros(n, dtype=bool)
    for i, text in enumerate(texts.to_pylist()):
        try:
            values.append(one.decode(text) if one is not None else RAW_LIST.decode(f"[{text}]"))
        except (msgspec.ValidationError, msgspec.DecodeError):
            values.append(None)
            failed[i] = True
        else:
            if one is None and len(values[-1]) != 1:
                failed[i] = True
    return values, failed


def object_text(texts: pa.Array) -> np.ndarray:
    """Non-null texts that start with ``{`` and end with ``}`` (no surrounding whitespace, so
    the stored text equals what the API's decoder keeps)."""
    starts = pc.starts_with(texts, "{")
    ends = pc.ends_with(texts, "}")
    return as_mask(pc.and_(starts, ends))


def as_mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def length_ok(texts: pa.Array, nullable: bool) -> np.ndarray:
    length = pc.utf8_length(texts)
    ok = as_mask(pc.and_(pc.greater_equal(length, 1), pc.less_equal(length, 256)))
    if nullable:
        ok |= as_mask(pc.is_null(texts))
    return ok


def distinct_codes(texts: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(code of each row's text, the distinct texts); null rows get code 0 (never used)."""
    encoded = pc.dictionary_encode(texts)
    codes = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary


def fill_nulls(values: pa.Array, fresh: pa.Array) -> pa.Array:
    """``values`` with its nulls replaced, in order, by ``fresh``."""
    missing = np.flatnonzero(as_mask(pc.is_null(values)))
    out = values.to_pylist()
    for at, value in zip(missing.tolist(), fresh.to_pylist(), strict=True):
        out[at] = value
    return pa.array(out, pa.string())


def byte_lengths(texts: pa.Array) -> pa.Array:
    return pc.fill_null(pc.binary_length(texts), 0)


def unwrap(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


def plain_text(batch: pa.RecordBatch, name: str) -> pa.Array | None:
    """A text column as ``string``; None when it holds something else (numbers, objects)."""
    array = unwrap(batch.column(batch.schema.names.index(name)))
    if pa.types.is_string(array.type):
        return array
    if pa.types.is_large_string(array.type) or pa.types.is_null(array.type):
        return array.cast(pa.string())
    return None
