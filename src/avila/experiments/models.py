"""Request models of the experiments API (msgspec Structs) and the stored experiment.

Bodies are decoded by Litestar with msgspec, so a schema violation is a 422
``validation_failed`` naming the field's JSON path (``$.variants[1].weight``). Checks msgspec
cannot express (unique variant names, a weight too small to get a bucket, an event condition's
type, the time range) raise :class:`avila.errors.ValidationFailed` with the path as well.
Semantics: docs/experiments.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

MatchMode = Literal["exact", "prefix", "contains", "regex"]

#: Experiment keys appear in URLs and in the tracker's exposure events.
ExperimentKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
VariantName = Annotated[str, Meta(min_length=1, max_length=64)]
# JSON has no NaN/Infinity; the upper bound keeps a sum of 20 weights finite and exact enough.
Weight = Annotated[float, Meta(gt=0, le=1_000_000)]


class Variant(Struct, forbid_unknown_fields=True):
    name: VariantName
    weight: Weight = 1.0


class ConversionGoal(Struct, tag_field="type", tag="conversion", forbid_unknown_fields=True):
    """Conversion to an event: ``condition_value`` "" means any event of the type."""

    condition_type: str
    condition_value: Annotated[str, Meta(max_length=2000)] = ""
    match: MatchMode = "exact"


class RevenueGoal(Struct, tag_field="type", tag="revenue", forbid_unknown_fields=True):
    """Revenue per exposed user: the ``revenue`` of purchase events after first exposure."""


class ExposureCondition(Struct, forbid_unknown_fields=True):
    condition_type: str
    condition_value: Annotated[str, Meta(max_length=2000)] = ""
    match: MatchMode = "exact"


class ExperimentSpec(Struct, forbid_unknown_fields=True):
    """``POST /api/v1/experiments``. The first variant is the control."""

    key: ExperimentKey
    variants: Annotated[list[Variant], Meta(min_length=2, max_length=20)]
    goal: ConversionGoal | RevenueGoal
    name: Annotated[str, Meta(max_length=200)] = ""
    exposure: ExposureCondition | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    #: Exposed users (all variants) the test was planned for; reading results before that
    #: many were exposed is peeking (see docs/experiments.md).
    planned_sample_size: Annotated[int, Meta(ge=2, le=10**12)] | None = None
    #: Two-sided significance level of the frequentist test.
    alpha: Annotated[float, Meta(gt=0, lt=0.5)] = 0.05


@dataclass(frozen=True)
class Experiment:
    """A stored experiment: its definition, with times as naive UTC."""

    project_id: str
    spec: ExperimentSpec
    start_time: datetime
    end_time: datetime | None
    created_at: datetime

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.spec.variants]

    @property
    def weights(self) -> list[float]:
        return [v.weight for v in self.spec.variants]

    def as_dict(self) -> dict[str, Any]:
        """The experiment as the API returns it (times RFC 3339 UTC)."""
        spec = self.spec
        return {
            "key": spec.key,
            "name": spec.name,
            "variants": [{"name": v.name, "weight": v.weight} for v in spec.variants],
            "goal": _struct_dict(spec.goal),
            "exposure": _struct_dict(spec.exposure) if spec.exposure is not None else None,
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "planned_sample_size": spec.planned_sample_size,
            "alpha": spec.alpha,
            "created_at": _iso(self.created_at),
        }


def _struct_dict(value: Struct) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(value)
    return out


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"
