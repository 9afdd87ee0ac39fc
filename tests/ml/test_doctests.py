"""The examples in the ML module docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["clv", "recommend", "anomaly", "evaluation", "nba", "features", "conversion", "registry"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"avila.ml.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_package_exports_resolve() -> None:
    import avila.ml

    for name in avila.ml.__all__:
        assert getattr(avila.ml, name) is not None
