""":func:`split_events` against the ``json`` module: for any ``{"events": [...]}`` body, every
element comes back as its own JSON text, whatever it holds (brackets and commas in strings,
escapes, unicode, scalars, deep nesting); anything else gives None."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avila.ingest.batch_split import split_events

TEXT = st.text(alphabet=st.sampled_from(list('ab,[]{}:" \\\n\t\u00fc\u65e5🎉')), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON, max_size=6), st.sampled_from([None, 0, 2]), st.booleans())
def test_each_element_comes_back_as_its_own_json(
    events: list[object], indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps({"events": events}, indent=indent, ensure_ascii=ascii_only).encode()
    split = split_events(body)
    assert split is not None
    assert [json.loads(raw) for raw in split] == events


def test_deep_nesting_is_split_without_recursion() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert split_events(b'{"events": [1, ' + deep + b', {"a": "]"}]}') == [
        b"1",
        deep,
        b'{"a": "]"}',
    ]


def test_an_escaped_key_is_still_events() -> None:
    assert split_events(b'{"ev\\u0065nts": [true]}') == [b"true"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"events": 1}',
        b'{"events": "[1]"}',
        b'{"other": [1]}',
        b'{"events": [1], "other": 2}',
        b'{"other": 2, "events": [1]}',
        b'{"events": [1,]}',
        b'{"events": [,1]}',
        b'{"events": [1,,2]}',
        b'{"events": [1]',
        b'{"events": [1]}}',
        b'{"events": [{"a": 1]}',
        b'{"events": [{"a": "x}, {"b": 1}]}',
        b'{"events" [1]}',
        b'{"events": [1] 5}',
        b'{x "events": [1]}',
        b'{"events": 5 [1]}',
    ],
)
def test_anything_else_is_none(body: bytes) -> None:
    assert split_events(body) is None
