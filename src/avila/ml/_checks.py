"""Input checks shared by the model modules.

Every check raises :class:`avila.errors.ValidationFailed` with a stable ``code`` and
``details`` entries shaped ``{"path", "message"}``, so the API handler can render them as-is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from avila.errors import AvilaError, ValidationFailed


def as_float_array(values: Any, name: str, *, code: str) -> np.ndarray:
    """Return ``values`` as a 1-D float array; reject NaN, infinities and wrong shapes."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(
            f"{name} must be numeric",
            code=code,
            details=[{"path": name, "message": str(exc)}],
        ) from exc
    if arr.ndim != 1:
        raise ValidationFailed(
            f"{name} must be one-dimensional",
            code=code,
            details=[{"path": name, "message": f"got shape {arr.shape}"}],
        )
    if not np.all(np.isfinite(arr)):
        raise ValidationFailed(
            f"{name} must be finite",
            code=code,
            details=[{"path": name, "message": "contains NaN or infinity"}],
        )
    return arr


def same_length(arrays: Sequence[np.ndarray], names: Sequence[str], *, code: str) -> None:
    lengths = {name: len(arr) for arr, name in zip(arrays, names, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValidationFailed(
            "inputs must have the same length",
            code=code,
            details=[{"path": name, "message": f"length {n}"} for name, n in lengths.items()],
        )


def require_fitted(model: object, attribute: str) -> None:
    """Raise when ``model`` has not been fitted (a programming error, hence HTTP 500)."""
    if getattr(model, attribute, None) is None:
        raise AvilaError(
            f"{type(model).__name__} is not fitted; call fit() first",
            code="model_not_fitted",
        )
