"""A/B experiments: definitions, deterministic assignment, results and their statistics.

See docs/experiments.md. :mod:`~avila.experiments.assignment` maps a user to a variant,
:mod:`~avila.experiments.repository` stores definitions, :mod:`~avila.experiments.results`
counts exposed and converted users in the store and :mod:`~avila.experiments.statistics` turns
the counts into tests, intervals and probabilities.
"""

from avila.experiments.models import Experiment, ExperimentSpec
from avila.experiments.repository import ExperimentRepository
from avila.experiments.results import results

__all__ = ["Experiment", "ExperimentRepository", "ExperimentSpec", "results"]
