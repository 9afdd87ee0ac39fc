"""Query parsing for the path, lifecycle and stickiness reports: :func:`parse_query` whose
validation errors also say what the bad field accepts (allowed values or range)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from avila.analytics.common import Q, parse_query
from avila.errors import ValidationFailed
from avila.schemas.constraints import explain


def parse_explained(model: type[Q], query: Q | Mapping[str, Any] | None) -> Q:
    """``query`` as a ``model``; on error, ValidationFailed whose details carry ``allowed`` or
    ``minimum``/``maximum`` for the field (see :mod:`avila.schemas.constraints`)."""
    try:
        return parse_query(model, query)
    except ValidationFailed as exc:
        exc.details = explain(model, exc.details)
        if exc.details:
            exc.message = str(exc.details[0].get("message", exc.message))
        raise


__all__ = ["parse_explained"]
