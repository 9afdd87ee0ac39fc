"""Experiment endpoints: create (``admin``), read definitions and results (``read``), and
assignment (``ingest``, so the browser tracker's embedded key may call it).

A thin transport layer over :mod:`avila.experiments`. Bodies decode into
:class:`~avila.experiments.models.ExperimentSpec` (schema errors: 422 ``validation_failed``
with the field path); unknown keys are 404 ``experiment_not_found``. Store calls run in a
worker thread. Semantics: docs/experiments.md.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from litestar import get, post
from litestar.params import Parameter

from avila.analytics.common import invalid
from avila.api.analytics import Result, run
from avila.api.component import AppContext
from avila.experiments import ExperimentRepository, ExperimentSpec, results
from avila.experiments.assignment import assign, bucket_bounds
from avila.security.keys import Principal

_TAGS = ["experiments"]
_KEY = "key:str"


def setup(ctx: AppContext) -> None:
    ctx.state["experiments"] = ExperimentRepository(ctx.store)


def _repository(state: dict[str, Any]) -> ExperimentRepository:
    repo: ExperimentRepository = state["experiments"]
    return repo


DEPENDENCIES = {"experiments": _repository}


@post(
    "/api/v1/experiments",
    opt={"scope": "admin"},
    status_code=201,
    summary="Create an experiment",
    description=(
        "Variants with weights (the first is the control), a goal (`conversion` to an event or"
        " `revenue` per user), an optional `exposure` event condition, the window"
        " `start_time`/`end_time` (start defaults to now), `planned_sample_size` and `alpha`."
        " Definitions are immutable: a taken key is 409."
    ),
    tags=_TAGS,
)
async def create_experiment(
    data: ExperimentSpec, principal: Principal, experiments: ExperimentRepository
) -> Result:
    experiment = await run(lambda: experiments.create(principal.project_id, data).as_dict())
    return experiment


@get(
    "/api/v1/experiments",
    opt={"scope": "read"},
    summary="List experiments",
    tags=_TAGS,
)
async def list_experiments(principal: Principal, experiments: ExperimentRepository) -> Result:
    return await run(
        lambda: {"experiments": [e.as_dict() for e in experiments.list(principal.project_id)]}
    )


@get(
    f"/api/v1/experiments/{{{_KEY}}}",
    opt={"scope": "read"},
    summary="One experiment's definition",
    tags=_TAGS,
)
async def get_experiment(
    key: str, principal: Principal, experiments: ExperimentRepository
) -> Result:
    return await run(lambda: experiments.get(principal.project_id, key).as_dict())


@get(
    f"/api/v1/experiments/{{{_KEY}}}/assignment",
    opt={"scope": "ingest"},
    summary="A user's variant",
    description=(
        "Deterministic: md5(project, key, user_id) picks the variant by weight, so a user always"
        " gets the same one. Records nothing; the tracker's `avila.variant(key)` records the"
        " exposure."
    ),
    tags=_TAGS,
)
async def get_assignment(
    key: str,
    principal: Principal,
    experiments: ExperimentRepository,
    user_id: Annotated[str | None, Parameter(max_length=256)] = None,
) -> Result:
    if not user_id:
        raise invalid("missing_user_id", "user_id", "give the user's id as ?user_id=")
    experiment = await asyncio.to_thread(experiments.get, principal.project_id, key)
    index = assign(principal.project_id, experiment.key, user_id, bucket_bounds(experiment.weights))
    return {"key": experiment.key, "user_id": user_id, "variant": experiment.variant_names[index]}


@get(
    f"/api/v1/experiments/{{{_KEY}}}/results",
    opt={"scope": "read"},
    summary="Experiment results",
    description=(
        "Per variant: exposed, converted, conversion rate with its 95 % Wilson interval (and"
        " revenue per user for revenue goals); the two-proportion z-test or Welch's t-test"
        " against the control, the probability each variant is best, the sample-ratio-mismatch"
        " p-value and a peeking warning before the planned sample size."
    ),
    tags=_TAGS,
)
async def get_results(key: str, principal: Principal, experiments: ExperimentRepository) -> Result:
    def compute() -> Result:
        return results(experiments.store, experiments.get(principal.project_id, key))

    return await run(compute)


ROUTES = [create_experiment, list_experiments, get_experiment, get_assignment, get_results]
